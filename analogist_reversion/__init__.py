"""ReVersion (Huang et al., SIGGRAPH Asia 2024): learn one relation token ``<R>`` from exemplars.

What is here: the recipe's defaults and word lists (``recipe``), the importance-sampling
distribution of t and the noise schedule (``schedule``), prompt tokenisation and the text
encoder forward with a trainable ``<R>`` row (``text``), the steering and denoising losses as
one function (``loss``), the exemplar data (``data``), the training loop with AdamW on
``<R>``, resumable intermediate saves and the embedding files (``trainer``, ``embeddings``),
the bridge from ComfyUI's own MODEL/CLIP/VAE objects and from a diffusers SD1 folder
(``comfy_parts``, ``diffusers_folder``; these import ``comfy`` inside functions only) and the
loss-curve image (``plot``).

Written from the paper and docs/design.md, "ReVersion"; the official code (S-Lab licence,
non-commercial) reaches this package only through the recorded goldens the tests replay.
"""
