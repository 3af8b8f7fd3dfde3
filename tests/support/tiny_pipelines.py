"""Tiny, random-initialised diffusers pipelines of the real architectures, built offline.

Nothing comes from a hub: the tokenizer is a byte-level BPE built in memory (every byte is a
token, plus the chat and vision special tokens), configs are written here, weights are random
with a fixed seed. ``save_pretrained`` writes a directory the engine loads like a real model.
The VAE downsamples 8x (like the real ones) so full-size outputs stay cheap on a CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}"
    "{{ part['text'] }}{% else %}<|vision_start|><|image_pad|><|vision_end|>{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<think>",
    "</think>",
]


def byte_level_tokenizer() -> object:
    """A Qwen2 tokenizer with a 256-symbol byte alphabet and no merges, built in memory."""
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = list(bytes_to_unicode().values())
    vocab = {symbol: index for index, symbol in enumerate(alphabet)}
    for token in SPECIAL:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=512,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL[1:]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


VAE_8X: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (4, 4, 4, 4),
    "layers_per_block": 1,
    "norm_num_groups": 1,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}
"""The tiny ``AutoencoderKL``-style VAE (FLUX.2's and SD3's), less its latent channels: four
one-layer blocks of four channels, so it downsamples 8x like the real ones."""


def flux2_transformer(*, guidance_embeds: bool) -> object:
    """The tiny Flux2 transformer of FLUX.2 [klein] (no guidance embeddings) and [dev]."""
    from diffusers import Flux2Transformer2DModel

    return Flux2Transformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=16,
        timestep_guidance_channels=256,
        axes_dims_rope=[4, 4, 4, 4],
        guidance_embeds=guidance_embeds,
    )


def tiny_flux2_klein(path: Path) -> Path:
    """FLUX.2 [klein]: Flux2 transformer (no guidance embeds), Qwen3 text encoder, Flux2 VAE."""
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    transformer = flux2_transformer(guidance_embeds=False)
    tokenizer = byte_level_tokenizer()
    text_encoder = Qwen3ForCausalLM(
        Qwen3Config(
            intermediate_size=16,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=512,
        )
    )  # type: ignore[arg-type]
    vae = AutoencoderKLFlux2(**VAE_8X, latent_channels=1)
    pipeline = Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=True,
    )
    pipeline.save_pretrained(path)
    return path


def tiny_qwen_image_edit(path: Path) -> Path:
    """Qwen-Image-Edit-2509/2511: QwenImage transformer, Qwen2.5-VL text encoder (with its
    vision tower: the reference image is read by it), Qwen-Image VAE, and the Qwen2-VL
    processor (whose video half needs torchvision, as in real use).

    The VAE downsamples 8x like the real one: the pipeline always encodes the reference at
    about one megapixel, so a 4x VAE would make its mid-block attention the slowest part.
    """
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPlusPipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = byte_level_tokenizer()
    token = tokenizer.convert_tokens_to_ids  # type: ignore[attr-defined]
    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,  # first-block cache needs a first block and the rest
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    latent = 4
    vae = AutoencoderKLQwenImage(
        base_dim=4,
        z_dim=latent,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * latent,
        latents_std=[1.0] * latent,
    )
    text_encoder = Qwen2_5_VLForConditionalGeneration(
        Qwen2_5_VLConfig(
            text_config={
                "hidden_size": 16,
                "intermediate_size": 16,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default"},
                "rope_theta": 1_000_000.0,
                "vocab_size": len(tokenizer),  # type: ignore[arg-type]
            },
            vision_config={
                "depth": 1,
                "hidden_size": 16,
                "intermediate_size": 16,
                "num_heads": 2,
                "out_hidden_size": 16,
            },
            hidden_size=16,
            vocab_size=len(tokenizer),  # type: ignore[arg-type]
            vision_start_token_id=token("<|vision_start|>"),
            vision_end_token_id=token("<|vision_end|>"),
            vision_token_id=token("<|image_pad|>"),
            image_token_id=token("<|image_pad|>"),
            video_token_id=token("<|video_pad|>"),
        )
    )
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=28 * 28 * 64),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )
    pipeline = QwenImageEditPlusPipeline(
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        processor=processor,
    )
    pipeline.save_pretrained(path)
    return path


def tiny_lora(pipeline_dir: Path, path: Path) -> Path:
    """A random LoRA on the attention projections of a saved tiny pipeline's transformer,
    saved the way diffusers saves trained ones (``pytorch_lora_weights.safetensors``).

    Its up-projections are random rather than zero, so fusing it really changes the weights.
    """
    import diffusers
    from diffusers import DiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(1)
    pipeline = DiffusionPipeline.from_pretrained(pipeline_dir)
    transformer = pipeline.transformer
    transformer.add_adapter(
        LoraConfig(
            r=2,
            lora_alpha=2,
            target_modules=["to_q", "to_k", "to_v"],
            init_lora_weights=False,
        )
    )
    pipeline_class = getattr(diffusers, type(pipeline).__name__)
    pipeline_class.save_lora_weights(
        path, transformer_lora_layers=get_peft_model_state_dict(transformer)
    )
    return path / "pytorch_lora_weights.safetensors"


def clip_tokenizer() -> object:
    """A CLIP tokenizer built in memory: every byte a symbol (as itself and word-final), no
    merges, 77 tokens like the real ones."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = list(bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in alphabet:
        vocab[symbol] = len(vocab)
        vocab[symbol + "</w>"] = len(vocab)
    return CLIPTokenizer(
        vocab=vocab,
        merges=[],
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=77,
    )


def tiny_stable_diffusion_3(path: Path) -> Path:
    """Stable Diffusion 3 / 3.5: SD3 MMDiT, two CLIP text encoders with projections (the T5
    encoder is optional in the pipeline and left out, as diffusers allows), an 8x VAE."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        caption_projection_dim=16,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        out_channels=4,
    )
    tokenizer = clip_tokenizer()

    def clip() -> object:
        return CLIPTextModelWithProjection(
            CLIPTextConfig(
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
                hidden_size=16,
                intermediate_size=16,
                projection_dim=16,
                num_attention_heads=2,
                num_hidden_layers=2,
                vocab_size=len(tokenizer),  # type: ignore[arg-type]
                max_position_embeddings=77,
                hidden_act="gelu",
            )
        )

    vae = AutoencoderKL(**VAE_8X, latent_channels=4, shift_factor=0.0609, scaling_factor=1.5035)
    pipeline = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=clip(),
        tokenizer=tokenizer,
        text_encoder_2=clip(),
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=None,
        tokenizer_3=None,
        image_encoder=None,
        feature_extractor=None,
    )
    pipeline.save_pretrained(path)
    return path


def tiny_qwen_image(path: Path) -> Path:
    """Qwen-Image (text-to-image and image-to-image): the QwenImage transformer, the
    Qwen2.5-VL text encoder, the Qwen-Image VAE; the edit model's tiny components without its
    processor (Qwen-Image reads text only)."""
    from diffusers import QwenImageEditPlusPipeline, QwenImagePipeline

    edit = QwenImageEditPlusPipeline.from_pretrained(tiny_qwen_image_edit(path / "edit"))
    pipeline = QwenImagePipeline(
        transformer=edit.transformer,
        vae=edit.vae,
        scheduler=edit.scheduler,
        text_encoder=edit.text_encoder,
        tokenizer=edit.tokenizer,
    )
    pipeline.save_pretrained(path / "generate")
    return path / "generate"


def tiny_flux2_dev(path: Path) -> Path:
    """FLUX.2 [dev]: the Flux2 transformer with guidance embeddings, a Mistral-3 text encoder
    (with its Pixtral vision tower, as the real one) and the Flux2 VAE.

    The real tokenizer is Mistral's Pixtral processor, which cannot be built offline; the
    pipeline only calls its ``apply_chat_template`` on text (reference images go to the VAE;
    the processor reads images only for prompt upsampling), so the byte-level tokenizer with
    a chat template stands in."""
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2Pipeline,
    )
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    torch.manual_seed(0)
    transformer = flux2_transformer(guidance_embeds=True)
    tokenizer = byte_level_tokenizer()
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")  # type: ignore[attr-defined]
    text_encoder = Mistral3ForConditionalGeneration(
        Mistral3Config(
            text_config={
                "model_type": "mistral",
                "vocab_size": len(tokenizer),  # type: ignore[arg-type]
                "hidden_size": 16,
                "intermediate_size": 16,
                "max_position_embeddings": 1024,
                "num_attention_heads": 2,
                "num_hidden_layers": 2,
                "num_key_value_heads": 2,
                "rope_theta": 1e9,
                "sliding_window": None,
                "pad_token_id": pad,
            },
            vision_config={
                "model_type": "pixtral",
                "hidden_size": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 16,
                "image_size": 30,
                "patch_size": 6,
                "num_channels": 3,
            },
            image_token_index=pad,
            pad_token_id=pad,
            vision_feature_layer=-1,
        )
    )
    vae = AutoencoderKLFlux2(**VAE_8X, latent_channels=1)
    pipeline = Flux2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )
    pipeline.save_pretrained(path)
    return path
