"""Image quality measures for the image tools' tests and benchmarks."""

from __future__ import annotations

import cv2
import numpy as np
from scipy.stats import wasserstein_distance
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    return float(peak_signal_noise_ratio(reference, image, data_range=255))


def ssim(reference: np.ndarray, image: np.ndarray) -> float:
    return float(structural_similarity(reference, image, channel_axis=2, data_range=255))


def gradient_magnitudes(rgb: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    dx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    dy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    return np.hypot(dx, dy).ravel()


def gradient_distance(reference: np.ndarray, image: np.ndarray) -> float:
    """The 1-Wasserstein distance between the gradient-magnitude distributions of the two
    images (lower is better): a perceptual texture measure that needs no learned weights.
    An upscale that is too smooth (bicubic) lacks the original's strong gradients; one that
    invents noise has too many."""
    return float(wasserstein_distance(gradient_magnitudes(reference), gradient_magnitudes(image)))
