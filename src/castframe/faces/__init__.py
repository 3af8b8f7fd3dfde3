"""Identity similarity between a reference face and output faces (optional ``faces`` extra)."""

from castframe.faces.identity import FaceModel, consistency, face_model

__all__ = ["FaceModel", "consistency", "face_model"]
