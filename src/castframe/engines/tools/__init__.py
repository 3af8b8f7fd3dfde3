"""Image tools on the CPU: background removal (``matting``, ``backgrounds``) and upscaling
(``superres``), and the ``tools`` engine that serves Apiframe's background-remove and upscale
models with them (``engine``)."""
