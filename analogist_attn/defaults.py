"""The paper's defaults (Gu et al. 2024, the official code's settings), each stated once.

Every node default, workflow, runner option and the diffusers pipeline imports them from
here; ``docs/design.md`` explains each.
"""

from __future__ import annotations

# --- the attention edits ------------------------------------------------------------------
SAC_SCALE = 1.3  # s in S[A', B'] <- s * S[A, B]
# Transformer blocks 3..10 of SD1.5's 16 in execution order (end exclusive), for SAC and CAM.
START_LAYER = 3
END_LAYER = 11
UNET_BLOCKS = 16  # SD1.5's transformer blocks: the paper's layer range is a share of these

# --- the grid -----------------------------------------------------------------------------
CELL = 256  # px per cell: a 512 x 512 grid
BORDER = 2  # px of white around each pasted image

# --- sampling (DDIM, 50 steps) --------------------------------------------------------------
STEPS = 50
CFG = 15.0
DENOISE = 0.98  # deblur / denoise tasks: 0.7
SEED = 0

# --- the prompt -----------------------------------------------------------------------------
PROMPT_SUFFIX = ", best quality, extremely detailed"
NEGATIVE_PROMPT = (
    "Messy,Disordered,Chaotic,Cluttered,Haphazard,Unkempt,Scattered,Disheveled,Tangled,Random"
)
