"""Build the example workflows (ComfyUI UI format), their example images and thumbnails.

    .venv/bin/python workflows/build_workflows.py          # (re)write everything
    .venv/bin/python workflows/build_workflows.py --check  # exit 1 if a file is stale

The node definitions come from ComfyUI 0.30.0 (the source tree scripts/setup_env.sh puts in
.cache/hosts, or the one ANALOGIST_COMFYUI_HOST names): the files are made for the current
frontend, and load in older ones too (extra trailing widget values are ignored there).

This file, with the modules it imports from this folder, is the source of truth: the JSON
files next to it are generated, never edited by hand. Each workflow is a short Python
description (nodes, widget values by input name, links by output name); the UI details
(``widgets_values`` order, the "control after generate" value after a seed, the upload
button value after LoadImage's image, socket lists, link ids) come from the node classes'
own ``INPUT_TYPES`` through ``analogist.workflow_format``, so they match what the ComfyUI
frontend saves.

What an artist opening a template gets (issue 22) comes from ``workflow_finish.py``, which
every recipe's graph goes through (``finish``): the nodes laid out in groups (pictures,
model, prompt, sampling, result) with nothing overlapping, at the zoom the frontend's "fit
view" gives; a markdown note with links (``markdown_note``); each loader's download link
(``MODEL_FILES``, which also names the model files), which the frontend's missing-model
panel offers; samplers whose seed randomizes after each run.

Everything here is deterministic: the example images are drawn with Pillow from fixed
shapes, the thumbnails are the paper's labelled grid built from them by the pack's own
grid code, with each template's badge, colour and caption (``workflow_pictures.py``).
MimicBrush's recipes, images and thumbnails are in ``mimicbrush_recipes.py``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
IMAGES = HERE / "images"
PACK = "comfyui_analogist"  # the name the pack is imported under (as in the tests)
DEFAULT_HOST = ROOT / ".cache" / "hosts" / "ComfyUI-0.30.0"


def _import_pack() -> None:
    """Import the pack as ``comfyui_analogist`` the one way (``analogist.import_pack``).

    The repo root is on sys.path only for that import: there its ``nodes/`` would shadow
    ComfyUI's top-level ``nodes``, which the node definitions below import.
    """
    if PACK not in sys.modules:
        sys.path.insert(0, str(ROOT))
        try:
            from analogist import import_pack
        finally:
            sys.path.remove(str(ROOT))
        import_pack()


_import_pack()
from comfyui_analogist.analogist_attn import defaults  # noqa: E402
from comfyui_analogist.analogist_cli.workflow_format import (  # noqa: E402
    Graph,
    Node,
    Out,
)

if str(HERE) not in sys.path:  # run as a script it is; imported as a module, maybe not
    sys.path.append(str(HERE))
import mimicbrush_recipes  # noqa: E402

# What every graph gets once made (layout, download links, seed control, the note's
# markdown), and the model files those links name: workflow_finish.py.
from workflow_finish import (  # noqa: E402
    CHECKPOINT,
    CLIP_VISION,
    CONTROLNET,
    FLUX_CLIP,
    FLUX_UNET,
    FLUX_VAE,
    LORA,
    SD15_CHECKPOINT,
    SDXL_CHECKPOINT,
    finish,
    markdown_note,
)

# The example images the recipes load, ReVersion's exemplars, the thumbnails:
# workflow_pictures.py.
from workflow_pictures import (  # noqa: E402
    CAPTIONS,
    EXEMPLAR_FOLDER,
    IMAGE_A,
    IMAGE_A2,
    IMAGE_A2_PRIME,
    IMAGE_A_PRIME,
    IMAGE_B,
    IMAGE_B_REGION,
    RELATION,
    THUMBNAILS,
    example_images,
    montage_thumbnail,
    png_bytes,
    reversion_exemplars,
    thumbnail,
)

# -- paper defaults (analogist_attn/defaults.py) --------------------------------------------
NEGATIVE_PROMPT = defaults.NEGATIVE_PROMPT
QUALITY_SUFFIX = defaults.PROMPT_SUFFIX
SAMPLER = {
    "seed": defaults.SEED,
    "steps": defaults.STEPS,
    "cfg": defaults.CFG,
    "sampler_name": "ddim",
    "scheduler": "ddim_uniform",
}

EXAMPLE_PROMPT = "a black triangle line drawing" + QUALITY_SUFFIX  # 5 words, like a VLM answer

USED_NODES = (
    "LoadImage",
    "CheckpointLoaderSimple",
    "LoraLoader",
    "CLIPTextEncode",
    "Canny",
    "ControlNetLoader",
    "ControlNetApplyAdvanced",
    "InpaintModelConditioning",
    "KSampler",
    "VAEDecode",
    "SaveImage",
    "PreviewImage",
    "AnalogistGridCompose",
    "AnalogistMarkAndArrow",
    "AnalogistGPT4VPrompt",
    "AnalogistSACPatch",
    "AnalogistCAMPatch",
    "AnalogistGridCrop",
)
WORKFLOWS = (
    "analogist_manual_prompt",
    "analogist",
    "analogist_aligned_with_b",
    "analogist_lora_controlnet",
)
# Best of N (issue 13): sample a batch, rank it with a CLIP vision model, keep the best.
USED_NODES += ("RepeatLatentBatch", "CLIPVisionLoader", "AnalogistRankCandidates")
WORKFLOWS += ("analogist_best_of_n",)
# SDXL inpainting (issue 14): a 1024 grid, SAC/CAM on the paper's levels carried to SDXL.
WORKFLOWS += ("analogist_sdxl",)
# Region of interest on B (issue 12): a mask on B limits the change; Grid Crop puts B back outside.
WORKFLOWS += ("analogist_region",)
# Several example pairs (issue 12): a second pair chained into Grid Compose's examples.
USED_NODES += ("AnalogistExamplePair",)
WORKFLOWS += ("analogist_two_examples",)
# Flux.1 Fill (issue 14, experimental): the usual Fill graph (UNETLoader, DualCLIPLoader,
# FluxGuidance, InpaintModelConditioning) with SAC/CAM on Flux's joint attention.
WORKFLOWS += ("analogist_flux_fill",)
FLUX_NODES = ("UNETLoader", "DualCLIPLoader", "VAELoader", "FluxGuidance")  # not all in 0.0.1
USED_NODES += FLUX_NODES
FLUX_LAYERS = (11, 39)  # the paper's share of the depth (3/16..11/16) of Flux.1's 57 blocks
FLUX_SAMPLER = {"seed": 0, "steps": 20, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal"}
# ReVersion (issue 21): learn a relation token <R> from an exemplar folder, then use it in prompts.
USED_NODES += ("AnalogistReVersionLearn", "EmptyLatentImage")
WORKFLOWS += ("reversion_learn", "reversion_generate")
REVERSION_SEED = 2023  # ReVersion's inference seed
# The diffusers-exact DDIM (issue 20): the paper's own sampler for the Analogist graph.
CUSTOM_SAMPLING_NODES = ("SamplerCustom",)
USED_NODES += CUSTOM_SAMPLING_NODES + ("AnalogistDDIMSigmas", "AnalogistDDIMSampler")
WORKFLOWS += ("analogist_exact_ddim",)
# MimicBrush (issue 20): its recipes, images and thumbnails live in mimicbrush_recipes.py.
USED_NODES += mimicbrush_recipes.USED_NODES
WORKFLOWS += mimicbrush_recipes.WORKFLOWS


# -- node definitions ----------------------------------------------------------------------
def node_definitions() -> dict[str, dict]:
    """``/object_info``-shaped definitions of the nodes the workflows use, from the classes.

    Imports ComfyUI (on the CPU) and this pack the way ComfyUI does. Run as a script, the
    ComfyUI is 0.30.0's tree (ANALOGIST_COMFYUI_HOST, else .cache/hosts); under the tests,
    whichever host the suite runs on.
    """
    import importlib
    import os

    if "comfy" not in sys.modules:
        tree = Path(os.environ.get("ANALOGIST_COMFYUI_HOST") or DEFAULT_HOST)
        if (tree / "main.py").is_file() and str(tree) not in sys.path:
            sys.path.append(str(tree))

    if "comfy.cli_args" not in sys.modules:
        from comfy import options

        options.enable_args_parsing()
        saved, sys.argv = sys.argv, [sys.argv[0], "--cpu"]
        try:
            import comfy.cli_args  # noqa: F401
        finally:
            sys.argv = saved
    try:  # the ComfyUI source tree (0.30.0, the host the shipped files are made for)
        from comfy_extras import nodes_canny

        import nodes as base_nodes

        canny = {"Canny": nodes_canny.Canny}
        from comfy_extras import nodes_flux

        canny["FluxGuidance"] = nodes_flux.FluxGuidance
    except ImportError:  # the 2024 registry packaging (0.0.1)
        from comfy.nodes import base_nodes
        from comfy_extras.nodes import nodes_canny

        canny = nodes_canny.NODE_CLASS_MAPPINGS
    try:  # SamplerCustom: comfy_extras in the source tree, comfy_extras.nodes in 0.0.1
        from comfy_extras import nodes_custom_sampler
    except ImportError:
        from comfy_extras.nodes import nodes_custom_sampler
    canny.update({name: getattr(nodes_custom_sampler, name) for name in CUSTOM_SAMPLING_NODES})

    pack = importlib.import_module(f"{PACK}.nodes")
    classes = {**base_nodes.NODE_CLASS_MAPPINGS, **canny}
    classes.update(pack.NODE_CLASS_MAPPINGS)
    defs = {}
    for name in USED_NODES:
        if name in FLUX_NODES and name not in classes:
            continue  # a host without Flux (0.0.1): the Flux workflow is made on 0.30.0
        cls = classes[name]
        if hasattr(cls, "GET_NODE_INFO_V1"):  # 0.30.0's v3 nodes (Canny) describe themselves
            info = cls.GET_NODE_INFO_V1()
            types, outputs, names = info["input"], list(info["output"]), list(info["output_name"])
        else:
            types = cls.INPUT_TYPES()
            outputs = list(getattr(cls, "RETURN_TYPES", ()))
            names = list(getattr(cls, "RETURN_NAMES", None) or outputs)
        defs[name] = {
            "input": {k: v for k, v in types.items() if k in ("required", "optional")},
            "output": outputs,
            "output_name": names,
        }
    return json.loads(json.dumps(defs))  # tuples -> lists, as over HTTP


# -- the workflows -------------------------------------------------------------------------
X = (0, 360, 720, 1100, 1480, 1860)  # the builder's rough columns: they set the order only
NOTE_SIZE = (420, 360)


@dataclass
class Recipe:
    cell: int = defaults.CELL
    arrangement: str = "A' right of A (paper)"
    start_layer: int = defaults.START_LAYER
    end_layer: int = defaults.END_LAYER
    sac_scale: float = defaults.SAC_SCALE
    denoise: float = defaults.DENOISE
    vlm: bool = False
    lora_controlnet: bool = False
    best_of: int = 0  # > 0: sample this many B' and keep the best (Rank Candidates)
    note: str = ""
    checkpoint: str = CHECKPOINT
    loading: str = ""  # replaces NOTE_LOADING's first item (which checkpoint to load)
    region: bool = False  # a region of interest on B (Load Image (as Mask) -> b_region)
    pairs: int = 1  # example pairs; 2..K come from Analogist Example Pair nodes
    flux: bool = False  # the Flux.1 Fill graph (build_flux)
    exact_ddim: bool = False  # SamplerCustom + the diffusers-exact DDIM pair instead of KSampler
    reversion: str = ""  # "learn" / "generate": ReVersion's graphs (build_reversion_*)


NOTE_LOADING = (
    "WHAT TO LOAD WHERE\n"
    "* Load Checkpoint: an SD1.5 *inpainting* checkpoint (9-channel UNet), e.g. "
    "sd-v1-5-inpainting.ckpt from the runwayml/stable-diffusion-inpainting model card "
    "(mirror: stable-diffusion-v1-5/stable-diffusion-inpainting), in ComfyUI/models/checkpoints/.\n"
    "* A, A', B: the three Load Image nodes. A -> A' is the example change; B is the image "
    "to change the same way. The example images ship with the pack (workflows/images/; "
    "the pack copies them into ComfyUI/input/ when it loads; or pick your own).\n"
    "* The result (B') is saved by Save Image; the preview shows A | A' | B | B'.\n"
)


def build(defs: dict[str, dict], recipe: Recipe) -> dict:
    if recipe.flux:
        return build_flux(defs, recipe)
    if recipe.reversion:
        return build_reversion(defs, recipe)
    g = Graph(defs)
    loading = NOTE_LOADING
    if recipe.loading:
        loading = (
            "WHAT TO LOAD WHERE\n"
            + recipe.loading
            + NOTE_LOADING[NOTE_LOADING.index("\n* A, A'") :]
        )
    g.note((X[0], -380), markdown_note(recipe.note, loading, SAMPLER["seed"]), size=NOTE_SIZE)
    a = g.add("LoadImage", (X[0], 0), "A (example, before)", image=IMAGE_A)
    a2 = g.add("LoadImage", (X[0], 360), "A' (example, after)", image=IMAGE_A_PRIME)
    b = g.add(
        "LoadImage",
        (X[0], 720),
        "B (to change)",
        image=IMAGE_B_REGION if recipe.region else IMAGE_B,
    )
    more = add_example_pairs(g, recipe)
    # The region of interest: B's own mask (drawn in its mask editor) into b_region.
    region = {"b_region": b.out("MASK")} if recipe.region else {}
    grid = g.add(
        "AnalogistGridCompose",
        (X[1], 0),
        a=a.out("IMAGE"),
        a_prime=a2.out("IMAGE"),
        b=b.out("IMAGE"),
        cell_width=recipe.cell,
        cell_height=recipe.cell,
        border=2,
        fit="stretch",
        arrangement=recipe.arrangement,
        **more,
        **region,
    )
    ckpt = g.add("CheckpointLoaderSimple", (X[1], 420), ckpt_name=recipe.checkpoint)
    model, clip = ckpt.out("MODEL"), ckpt.out("CLIP")
    if recipe.lora_controlnet:
        lora = g.add(
            "LoraLoader",
            (X[1], 580),
            model=model,
            clip=clip,
            lora_name=LORA,
            strength_model=0.8,
            strength_clip=0.8,
        )
        model, clip = lora.out("MODEL"), lora.out("CLIP")
    sac = g.add(
        "AnalogistSACPatch",
        (X[2], 0),
        model=model,
        layout=grid.out("layout"),
        sac_scale=recipe.sac_scale,
        start_layer=recipe.start_layer,
        end_layer=recipe.end_layer,
    )
    cam = g.add(
        "AnalogistCAMPatch",
        (X[2], 330),
        model=sac.out("MODEL"),
        layout=grid.out("layout"),
        start_layer=recipe.start_layer,
        end_layer=recipe.end_layer,
        **({"text_only_in_region": True} if recipe.region else {}),
    )
    if recipe.vlm:
        marked = g.add(
            "AnalogistMarkAndArrow",
            (X[1], 760),
            grid=grid.out("grid_blank"),
            layout=grid.out("layout"),
        )
        g.add(
            "PreviewImage",
            (X[1], 1080),
            "Labelled grid (what the VLM sees)",
            images=marked.out("marked_grid"),
        )
        # The layout tells the request how many example pairs the grid holds (one: the
        # paper's words; several, once an Example Pair is chained in: every pair named).
        vlm = g.add(
            "AnalogistGPT4VPrompt",
            (X[2], 640),
            image=marked.out("marked_grid"),
            layout=grid.out("layout"),
        )
        positive = g.add(
            "CLIPTextEncode", (X[3], 0), "Positive prompt (from the VLM)", text="", clip=clip
        )
        positive.links["text"] = vlm.out("prompt")
    else:
        positive = g.add(
            "CLIPTextEncode",
            (X[3], 0),
            "Positive prompt: describe B'",
            text=EXAMPLE_PROMPT,
            clip=clip,
        )
    negative = g.add(
        "CLIPTextEncode", (X[3], 260), "Negative prompt (paper)", text=NEGATIVE_PROMPT, clip=clip
    )
    pos_cond, neg_cond = positive.out(0), negative.out(0)
    if recipe.lora_controlnet:
        canny = g.add(
            "Canny",
            (X[2], 640),
            "B's structure (edges of the grid)",
            image=grid.out("grid"),
            low_threshold=0.4,
            high_threshold=0.8,
        )
        g.add("PreviewImage", (X[2], 840), "Edges", images=canny.out("IMAGE"))
        cnet = g.add("ControlNetLoader", (X[3], 520), control_net_name=CONTROLNET)
        apply = g.add(
            "ControlNetApplyAdvanced",
            (X[3], 640),
            positive=pos_cond,
            negative=neg_cond,
            control_net=cnet.out("CONTROL_NET"),
            image=canny.out("IMAGE"),
            strength=0.6,
            start_percent=0.0,
            end_percent=1.0,
        )
        pos_cond, neg_cond = apply.out(0), apply.out(1)
    cond = g.add(
        "InpaintModelConditioning",
        (X[4], 0),
        positive=pos_cond,
        negative=neg_cond,
        vae=ckpt.out("VAE"),
        pixels=grid.out("grid"),
        mask=grid.out("mask"),
    )
    latent = cond.out(2)
    if recipe.best_of:
        latent = g.add(
            "RepeatLatentBatch",
            (X[3], 560),
            f"{recipe.best_of} candidates",
            samples=latent,
            amount=recipe.best_of,
        ).out(0)
    if recipe.exact_ddim:
        sampler = add_exact_ddim(g, recipe, cam.out("MODEL"), cond, latent)
    else:
        sampler = g.add(
            "KSampler",
            (X[4], 200),
            model=cam.out("MODEL"),
            positive=cond.out(0),
            negative=cond.out(1),
            latent_image=latent,
            denoise=recipe.denoise,
            **SAMPLER,
        )
    decoded = g.add("VAEDecode", (X[4], 520), samples=sampler.out(0), vae=ckpt.out("VAE"))
    crop = g.add("AnalogistGridCrop", (X[5], 0), grid=decoded.out(0), layout=grid.out("layout"))
    if recipe.best_of:
        best = add_ranking(g, recipe, (a, a2, b), crop.out("b_prime"))
        g.add(
            "SaveImage",
            (X[5], 180),
            f"B' (best of {recipe.best_of})",
            images=best,
            filename_prefix="analogist/b_prime_best",
        )
    else:
        g.add(
            "SaveImage",
            (X[5], 180),
            "B' (result)",
            images=crop.out("b_prime"),
            filename_prefix="analogist/b_prime",
        )
    g.add("PreviewImage", (X[5], 560), "A | A' | B | B'", images=crop.out("strip"))
    return finish(g)


def add_example_pairs(g: Graph, recipe: Recipe) -> dict[str, Out]:
    """Pairs 2..K: two Load Image nodes and an Example Pair each, chained in order; the
    chain's end goes to Grid Compose's ``examples`` (nothing for one pair)."""
    images = {2: (IMAGE_A2, IMAGE_A2_PRIME)}
    chain: Out | None = None
    for k in range(2, recipe.pairs + 1):
        # One row per pair below B, A_k | A_k' | Example Pair side by side, so the title
        # bars stay inside the saved view (scale 0.6 shows world y up to ~1220).
        y = 1080 + 380 * (k - 2)
        before, after = images[k]
        a_k = g.add("LoadImage", (X[0], y), f"A{k} (example {k}, before)", image=before)
        a_k_prime = g.add("LoadImage", (X[1], y), f"A{k}' (example {k}, after)", image=after)
        links = {"a": a_k.out("IMAGE"), "a_prime": a_k_prime.out("IMAGE")}
        if chain is not None:
            links["examples"] = chain
        chain = g.add("AnalogistExamplePair", (X[2], y), **links).out("examples")
    return {} if chain is None else {"examples": chain}


def build_flux(defs: dict[str, dict], recipe: Recipe) -> dict:
    """The typed-prompt method on Flux.1 Fill: ComfyUI's usual Fill graph plus SAC and CAM."""
    g = Graph(defs)
    g.note(
        (X[0], -380),
        markdown_note(recipe.note, recipe.loading, FLUX_SAMPLER["seed"]),
        size=NOTE_SIZE,
    )
    a = g.add("LoadImage", (X[0], 0), "A (example, before)", image=IMAGE_A)
    a2 = g.add("LoadImage", (X[0], 360), "A' (example, after)", image=IMAGE_A_PRIME)
    b = g.add("LoadImage", (X[0], 720), "B (to change)", image=IMAGE_B)
    grid = g.add(
        "AnalogistGridCompose",
        (X[1], 0),
        a=a.out("IMAGE"),
        a_prime=a2.out("IMAGE"),
        b=b.out("IMAGE"),
        cell_width=recipe.cell,
        cell_height=recipe.cell,
        border=2,
        fit="stretch",
        arrangement=recipe.arrangement,
    )
    unet = g.add(
        "UNETLoader",
        (X[1], 420),
        "Flux.1 Fill (diffusion model)",
        unet_name=FLUX_UNET,
        weight_dtype="default",
    )
    clip = g.add(
        "DualCLIPLoader", (X[1], 560), clip_name1=FLUX_CLIP[0], clip_name2=FLUX_CLIP[1], type="flux"
    )
    vae = g.add("VAELoader", (X[1], 740), vae_name=FLUX_VAE)
    sac = g.add(
        "AnalogistSACPatch",
        (X[2], 0),
        model=unet.out("MODEL"),
        layout=grid.out("layout"),
        sac_scale=recipe.sac_scale,
        start_layer=recipe.start_layer,
        end_layer=recipe.end_layer,
    )
    cam = g.add(
        "AnalogistCAMPatch",
        (X[2], 330),
        model=sac.out("MODEL"),
        layout=grid.out("layout"),
        start_layer=recipe.start_layer,
        end_layer=recipe.end_layer,
    )
    positive = g.add(
        "CLIPTextEncode",
        (X[3], 0),
        "Positive prompt: describe B'",
        text=EXAMPLE_PROMPT,
        clip=clip.out("CLIP"),
    )
    negative = g.add(
        "CLIPTextEncode",
        (X[3], 260),
        "Negative prompt (unused at CFG 1)",
        text="",
        clip=clip.out("CLIP"),
    )
    guided = g.add("FluxGuidance", (X[3], 520), conditioning=positive.out(0), guidance=30.0)
    cond = g.add(
        "InpaintModelConditioning",
        (X[4], 0),
        positive=guided.out(0),
        negative=negative.out(0),
        vae=vae.out("VAE"),
        pixels=grid.out("grid"),
        mask=grid.out("mask"),
    )
    sampler = g.add(
        "KSampler",
        (X[4], 200),
        model=cam.out("MODEL"),
        positive=cond.out(0),
        negative=cond.out(1),
        latent_image=cond.out(2),
        denoise=recipe.denoise,
        **FLUX_SAMPLER,
    )
    decoded = g.add("VAEDecode", (X[4], 520), samples=sampler.out(0), vae=vae.out("VAE"))
    crop = g.add("AnalogistGridCrop", (X[5], 0), grid=decoded.out(0), layout=grid.out("layout"))
    g.add(
        "SaveImage",
        (X[5], 180),
        "B' (result)",
        images=crop.out("b_prime"),
        filename_prefix="analogist/b_prime_flux",
    )
    g.add("PreviewImage", (X[5], 560), "A | A' | B | B'", images=crop.out("strip"))
    return finish(g)


def add_exact_ddim(g: Graph, recipe: Recipe, model: Out, cond: Node, latent: Out) -> Node:
    """SamplerCustom with the diffusers-exact DDIM pair: the paper's 50 steps, strength = denoise."""
    sigmas = g.add(
        "AnalogistDDIMSigmas",
        (X[3], 560),
        "DDIM sigmas (50 steps, strength 0.98)",
        model=model,
        steps=SAMPLER["steps"],
        strength=recipe.denoise,
    )
    ddim = g.add("AnalogistDDIMSampler", (X[3], 760), "DDIM sampler (diffusers-exact)")
    return g.add(
        "SamplerCustom",
        (X[4], 200),
        "Sampler (paper: diffusers DDIM, CFG 15)",
        model=model,
        add_noise=True,
        noise_seed=SAMPLER["seed"],
        cfg=SAMPLER["cfg"],
        positive=cond.out(0),
        negative=cond.out(1),
        sampler=ddim.out("SAMPLER"),
        sigmas=sigmas.out("SIGMAS"),
        latent_image=latent,
    )


def build_reversion(defs: dict[str, dict], recipe: Recipe) -> dict:
    """ReVersion: learn <R> from the exemplar folder, or use a learned <R> in a prompt."""
    g = Graph(defs)
    seed = None if recipe.reversion == "learn" else REVERSION_SEED
    g.note((X[0], -380), markdown_note(recipe.note, recipe.loading, seed), size=NOTE_SIZE)
    ckpt = g.add("CheckpointLoaderSimple", (X[0], 0), "SD1.5 checkpoint", ckpt_name=SD15_CHECKPOINT)
    if recipe.reversion == "learn":
        learn = g.add(
            "AnalogistReVersionLearn",
            (X[1], 0),
            "Learn <R> (shows what to type when done)",
            model=ckpt.out("MODEL"),
            clip=ckpt.out("CLIP"),
            vae=ckpt.out("VAE"),
            name=RELATION,
            folder=EXEMPLAR_FOLDER,
            captions="",
        )
        g.add("PreviewImage", (X[2] + 40, 0), "Loss curve", images=learn.out("loss_curve"))
        return finish(g)
    positive = g.add(
        "CLIPTextEncode",
        (X[1], 0),
        "Prompt with the learned relation",
        text=f"a cat embedding:{RELATION} a basket",
        clip=ckpt.out("CLIP"),
    )
    negative = g.add(
        "CLIPTextEncode", (X[1], 260), "Negative prompt", text="", clip=ckpt.out("CLIP")
    )
    empty = g.add("EmptyLatentImage", (X[1], 520), width=512, height=512, batch_size=1)
    sampler = g.add(
        "KSampler",
        (X[2], 0),
        model=ckpt.out("MODEL"),
        positive=positive.out(0),
        negative=negative.out(0),
        latent_image=empty.out(0),
        seed=REVERSION_SEED,
        steps=50,
        cfg=7.5,
        sampler_name="ddim",
        scheduler="ddim_uniform",
        denoise=1.0,
    )
    decoded = g.add("VAEDecode", (X[3], 0), samples=sampler.out(0), vae=ckpt.out("VAE"))
    g.add(
        "SaveImage",
        (X[3], 140),
        "Result",
        images=decoded.out(0),
        filename_prefix=f"reversion/{RELATION}",
    )
    return finish(g)


def add_ranking(g: Graph, recipe: Recipe, inputs: tuple[Node, Node, Node], candidates: Out) -> Out:
    """Rank Candidates on the cropped B' batch; the best one out, all of them previewed."""
    a, a2, b = (node.out("IMAGE") for node in inputs)
    vision = g.add(
        "CLIPVisionLoader",
        (X[5] + 380, 0),
        "CLIP vision (scores the candidates)",
        clip_name=CLIP_VISION,
    )
    ranked = g.add(
        "AnalogistRankCandidates",
        (X[5] + 380, 140),
        a=a,
        a_prime=a2,
        b=b,
        b_prime=candidates,
        clip_vision=vision.out("CLIP_VISION"),
        top_k=1,
    )
    g.add(
        "PreviewImage", (X[5] + 380, 460), "All candidates, best first", images=ranked.out("sorted")
    )
    return ranked.out("best")


RECIPES: dict[str, Callable[[], Recipe]] = {
    "analogist_manual_prompt": lambda: Recipe(
        note="ANALOGIST, MANUAL PROMPT (no API key, works offline)\n"
        "A : A' :: B : ?  The three images go into a 2x2 grid; the inpainting model fills "
        "the fourth cell (B') while Self-Attention Cloning copies the A->A' relation and "
        "Cross-Attention Masking lets only B' read the prompt. Type what B' should show "
        "in the positive prompt (keep ', best quality, extremely detailed'). Paper "
        "settings: cells 256, SAC/CAM blocks 3-10 (start 3, end 11), scale 1.3, DDIM 50 "
        "steps, CFG 15, denoise 0.98."
    ),
    "analogist": lambda: Recipe(
        vlm=True,
        note="ANALOGIST, FULL METHOD (vision-language model writes the prompt)\n"
        "As in the paper: Mark and Arrow labels the grid, GPT-4V Prompt asks a vision "
        "model what B' should be and appends ', best quality, extremely detailed'. "
        "API key: set OPENAI_API_KEY in ComfyUI's environment (never in a widget), or "
        "run a local model: set base_url to http://127.0.0.1:11434/v1 (Ollama) or "
        "http://127.0.0.1:1234/v1 (LM Studio) and model to a vision model (llava, "
        "qwen2.5vl). Paper settings: cells 256, SAC/CAM blocks 3-10, scale 1.3, DDIM 50, "
        "CFG 15, denoise 0.98.",
    ),
    "analogist_aligned_with_b": lambda: Recipe(
        cell=512,
        arrangement="A aligned with B",
        start_layer=4,
        end_layer=8,
        denoise=0.8,
        note="ANALOGIST, 'A ALIGNED WITH B' (the paper's corgi example)\n"
        "Use it when A matches B in layout (pose, outline) rather than A': the grid "
        "swaps A' and B. Paper settings for it: 1024 grid (cells 512), SAC/CAM on "
        "blocks 4-7 (start 4, end 8), scale 1.3, CFG 15, denoise 0.8. A 1024 grid is four "
        "times the work of a 512 one: lower the cells to 256 on a small GPU or a CPU.",
    ),
    "analogist_lora_controlnet": lambda: Recipe(
        lora_controlnet=True,
        note="ANALOGIST + LORA + CONTROLNET\n"
        "The paper's method with a style LoRA (Load LoRA, between the checkpoint and SAC) "
        "and a ControlNet that holds B's structure: Canny edges of the sampling grid "
        "(whose B' cell is a copy of B) feed Apply ControlNet. Load an SD1.5 LoRA into "
        "ComfyUI/models/loras/ and an SD1.5 ControlNet (e.g. control_v11p_sd15_canny.pth "
        "from lllyasviel/ControlNet-v1-1) into ComfyUI/models/controlnet/. Lower the "
        "ControlNet strength if B' copies B too literally.",
    ),
    "analogist_best_of_n": lambda: Recipe(
        best_of=4,
        note="ANALOGIST, BEST OF 4 (ranked by the paper's CLIP metric)\n"
        "The typed-prompt workflow sampling 4 B' at once (Repeat Latent Batch 4: one seed, "
        "four different noises). Rank Candidates scores each with the paper's measure, "
        "cos(E(A') - E(A), E(B') - E(B)) with E a CLIP image encoder, saves the best and "
        "previews all four best first; the scores show on the node. Load CLIP Vision: a CLIP "
        "image encoder in ComfyUI/models/clip_vision/, e.g. the ViT-H/14 or ViT-L/14 one "
        "IPAdapter uses (ComfyUI's loader does not take the paper's ViT-B/16). Raise the "
        "batch for more choice (each candidate costs a full sampling run).",
    ),
    "analogist_sdxl": lambda: Recipe(
        cell=512,
        start_layer=2,
        end_layer=66,
        checkpoint=SDXL_CHECKPOINT,
        loading="* Load Checkpoint: an SDXL *inpainting* checkpoint (9-channel UNet) in "
        "ComfyUI/models/checkpoints/ (a single file); set "
        "ckpt_name to its file name.",
        note="ANALOGIST ON SDXL INPAINTING (1024 grid, cells 512)\n"
        "The typed-prompt workflow on SDXL. SAC/CAM layers 2-65 (start 2, end 66) are the "
        "paper's SD1.5 choice carried to SDXL's 70 transformer blocks by resolution level: "
        "input 5 (64x64 tokens), input 7-8, middle, output 0-2 (32x32), output 3 (64x64). "
        "end_layer 0 picks the same for whatever model is loaded (SD1.5: 3-10). No SDXL "
        "weights were tried with it: sampler settings are the paper's SD1.5 ones (DDIM 50, "
        "CFG 15, denoise 0.98); SDXL usually wants a lower CFG (5-8).",
    ),
    "analogist_region": lambda: Recipe(
        region=True,
        loading="* Load Checkpoint: an SD1.5 *inpainting* checkpoint (9-channel UNet), e.g. "
        "sd-v1-5-inpainting.ckpt, in ComfyUI/models/checkpoints/.\n"
        "* B and its region: B's Load Image, with the region painted in its mask editor "
        "(right click > Open in MaskEditor); its MASK output goes to Grid Compose's "
        "b_region. The example (analogist_example_b_region.png) is B with the triangle's "
        "top masked. An image without a painted mask gives an error saying so.",
        note="ANALOGIST, REGION OF INTEREST ON B (only part of B changes)\n"
        "The typed-prompt workflow with a mask on B: Grid Compose maps it into B' and its "
        "mask output (the inpainting mask) covers only that region, grown to whole 8x8 px "
        "latent pixels; the sampler keeps the rest of B'. Grid Crop puts B's own pixels "
        "back outside the region, blended over 'feather' px (default 4), so nothing "
        "outside changes. CAM's text_only_in_region lets only the region read the prompt. "
        "An empty region, or one outside B, is an error.",
    ),
    "analogist_flux_fill": lambda: Recipe(
        cell=512,
        start_layer=FLUX_LAYERS[0],
        end_layer=FLUX_LAYERS[1],
        flux=True,
        loading="WHAT TO LOAD WHERE (no checkpoint: Flux.1 Fill comes as separate files)\n"
        f"* Load Diffusion Model: {FLUX_UNET} (black-forest-labs/FLUX.1-Fill-dev) in "
        "ComfyUI/models/diffusion_models/.\n"
        f"* DualCLIPLoader: {FLUX_CLIP[0]} and {FLUX_CLIP[1]} (or t5xxl_fp8_e4m3fn) in "
        "ComfyUI/models/text_encoders/, type flux.\n"
        f"* Load VAE: {FLUX_VAE} (the FLUX.1 VAE) in ComfyUI/models/vae/.\n"
        "* A, A', B: the three Load Image nodes (example images in the pack's "
        "workflows/images/). The result (B') is saved by Save Image.",
        note="ANALOGIST ON FLUX.1 FILL (EXPERIMENTAL; 1024 grid, cells 512)\n"
        "SAC and CAM on Flux's joint text-image attention (ComfyUI 0.3.4x+). Layers count "
        "Flux's 57 blocks in execution order: 0-18 double blocks, 19-56 single blocks. "
        "11-38 (start 11, end 39; end 0 gives the same) is the paper's share of the depth, "
        "a starting point only: no Flux weights could be tried when this was made. The rest "
        "is ComfyUI's usual Fill graph: FluxGuidance 30, CFG 1 (one pass: 'passes' then only "
        "sees the prompt pass), euler / normal, 20 steps; denoise 0.98 as in the paper "
        "(Fill users often use 1.0).",
    ),
}


RECIPES["analogist_two_examples"] = lambda: Recipe(
    pairs=2,
    note="ANALOGIST, TWO EXAMPLE PAIRS\n"
    "One pair can be read several ways; two that share the change make it clear. Here A -> "
    "A' (orange disc -> its outline) and A2 -> A2' (blue square -> its outline) both say "
    "'colour shape -> line drawing'. Analogist Example Pair adds a pair to Grid Compose's "
    "examples input (chain more Example Pair nodes for up to 4 pairs in all): each pair is "
    "a grid row, B | B' the last, and SAC lets B' copy from every pair. Each row makes the "
    "grid taller (cells 256: 512 x 768 px here, 1.5x the tokens), so sampling takes "
    "about 1.75x as long as with one pair. Otherwise the paper's settings, as in the typed-prompt workflow.",
)


REVERSION_LICENCE = (
    "Licence: ReVersion's method and code (ziqihuangg/ReVersion) are under the S-Lab licence, "
    "non-commercial use only; this port follows it."
)
RECIPES["reversion_learn"] = lambda: Recipe(
    reversion="learn",
    note="REVERSION: LEARN A RELATION WORD FROM A FEW IMAGES\n"
    "4-10 images that share one relation (here: something inside a container) teach one new "
    f"word, <R>. Learn <R> trains only that word on the SD1.5 model and saves it as "
    f"ComfyUI/models/embeddings/{RELATION}.safetensors; the node then shows what to type "
    f"(embedding:{RELATION}) and the preview shows the loss per step. Use it with "
    "reversion_generate.json. Paper settings are the defaults (3000 steps, batch 2 x 4: "
    "hours on a GPU, see docs/reversion.md); cancelling keeps the intermediate embeddings "
    "and queueing again resumes. A name that exists is refused: pick a new one.\n"
    + REVERSION_LICENCE,
    loading="WHAT TO LOAD WHERE\n"
    f"* Load Checkpoint: a plain SD1.5 checkpoint (e.g. {SD15_CHECKPOINT}) in "
    "ComfyUI/models/checkpoints/ (not an inpainting one; SDXL and Flux are refused).\n"
    f"* The exemplars: a folder inside ComfyUI/input/ with the images and a text.json mapping "
    "each file name to caption templates with {} where the relation goes, e.g. "
    '{"disc_box.png": ["orange disc {} blue box"]} (the official ReVersion layout). The example '
    f"folder ({EXEMPLAR_FOLDER}) ships with the pack, which copies it into ComfyUI/input/ when it loads; "
    "or put your own folder there and type its name in 'folder'.",
)
RECIPES["reversion_generate"] = lambda: Recipe(
    reversion="generate",
    note="REVERSION: USE A LEARNED RELATION IN A PROMPT\n"
    f"Type embedding:<name> where the relation goes: 'a cat embedding:{RELATION} a basket' "
    "(ReVersion's 'cat <R> stone' prompts). 'embedding:' is ComfyUI's way to call a file from "
    "ComfyUI/models/embeddings/ by name (no extension). Relations learned with "
    "reversion_learn.json work, and so do the official released ones: put a ReVersion "
    "learned_embeds.bin in models/embeddings/ under a name of its own (e.g. painted_on.bin) "
    "and type embedding:painted_on. Too weak a relation: repeat it or raise CFG; describe "
    "the entities plainly.\n" + REVERSION_LICENCE,
    loading="WHAT TO LOAD WHERE\n"
    f"* Load Checkpoint: the SD1.5 checkpoint the relation was learned on (e.g. {SD15_CHECKPOINT}) "
    "in ComfyUI/models/checkpoints/.\n"
    f"* The relation: {RELATION}.safetensors (from Learn <R>) or an official learned_embeds.bin, "
    "renamed, in ComfyUI/models/embeddings/.",
)
RECIPES["analogist_exact_ddim"] = lambda: Recipe(
    exact_ddim=True,
    note="ANALOGIST WITH THE PAPER'S EXACT SAMPLER (diffusers DDIM)\n"
    "The typed-prompt workflow, sampled the way the paper's diffusers pipeline samples: "
    "SamplerCustom with Analogist DDIM Sigmas (50 steps, strength 0.98 = the paper's denoise, "
    "so 49 steps run) and Analogist DDIM Sampler, CFG 15. ComfyUI's ddim + ddim_uniform takes "
    "the same timesteps but starts and ends slightly differently (docs/sampling.md); use this "
    "one to reproduce the paper's numbers. Lower 'strength' to keep more of B.",
)


def build_mimicbrush(defs: dict[str, dict], name: str) -> dict:
    """A MimicBrush workflow: its recipe's graph, with the note, groups, links and seed
    control every shipped workflow gets."""
    g = mimicbrush_recipes.build(defs, name)
    note = markdown_note(
        mimicbrush_recipes.NOTES[name], mimicbrush_recipes.NOTE_FILES, mimicbrush_recipes.SEED
    )
    g.note((0, -400), note, size=NOTE_SIZE)
    return finish(g, mimicbrush_recipes.GROUP_TITLES)


def render_all(defs: dict[str, dict]) -> dict[Path, bytes]:
    """Every generated file: path -> exact bytes."""
    files: dict[Path, bytes] = {}
    images = example_images()
    for name, image in images.items():
        files[IMAGES / name] = png_bytes(image)
    exemplars = reversion_exemplars()
    for name, (image, _) in exemplars.items():
        files[IMAGES / EXEMPLAR_FOLDER / name] = png_bytes(image)
    text = {name: templates for name, (_, templates) in exemplars.items()}
    files[IMAGES / EXEMPLAR_FOLDER / "text.json"] = (json.dumps(text, indent=2) + "\n").encode()
    files.update(mimicbrush_recipes.render_all(defs))
    for name in mimicbrush_recipes.WORKFLOWS:
        files[HERE / f"{name}.json"] = (
            json.dumps(build_mimicbrush(defs, name), indent=2) + "\n"
        ).encode()
    for name in WORKFLOWS:
        if name in mimicbrush_recipes.WORKFLOWS:
            continue
        recipe = RECIPES[name]()
        workflow = build(defs, recipe)
        files[HERE / f"{name}.json"] = (json.dumps(workflow, indent=2) + "\n").encode()
        if recipe.reversion:
            files[HERE / f"{name}.jpg"] = montage_thumbnail(
                [image for image, _ in exemplars.values()], CAPTIONS[name], look=THUMBNAILS[name]
            )
            continue
        files[HERE / f"{name}.jpg"] = thumbnail(
            images, recipe.arrangement, CAPTIONS[name], pairs=recipe.pairs, look=THUMBNAILS[name]
        )
    return files


def is_current(path: Path, data: bytes) -> bool:
    """JSON byte for byte; images by their pixels (encoders differ between Pillow builds)."""
    if not path.exists():
        return False
    if path.suffix == ".json":
        return path.read_bytes() == data
    import numpy as np
    from PIL import Image

    old, new = Image.open(path), Image.open(io.BytesIO(data))
    if old.size != new.size or old.mode != new.mode:
        return False
    tolerance = 0 if path.suffix == ".png" else 8  # JPEG decoders round differently
    diff = np.abs(np.asarray(old, np.int16) - np.asarray(new, np.int16))
    return int(diff.max()) <= tolerance


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a generated file is stale")
    args = parser.parse_args(argv)
    files = render_all(node_definitions())
    stale = [p for p, data in files.items() if not is_current(p, data)]
    if args.check:
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)}")
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
