"""What every shipped workflow gets once its recipe has made the nodes (``finish``).

Used by ``build_workflows.py`` and, through its ``build_mimicbrush``, by MimicBrush's graphs;
imported after the pack, like ``mimicbrush_recipes``. What an artist opening a template
gets (issue 22):

- the nodes laid out in groups (pictures, model, prompt, sampling, result; ``auto_layout``)
  with nothing overlapping, at the zoom the frontend's "fit view" gives (Templates opens a
  workflow that way);
- each loader's download link (``add_model_links``, from ``MODEL_FILES``), which the
  frontend's missing-model panel offers;
- samplers whose seed randomizes after each run (``randomize_seeds``);
- the recipe's note as markdown with links (``markdown_note``; the builder places it).
"""

from __future__ import annotations

import mimicbrush_recipes
from comfyui_analogist.analogist_cli.workflow_format import Graph, Group, Node

# -- the model files the workflows name ------------------------------------------------------
CHECKPOINT = "sd-v1-5-inpainting.ckpt"
LORA = "your_sd15_lora.safetensors"
CONTROLNET = "control_v11p_sd15_canny.pth"
CLIP_VISION = (
    "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"  # the image encoder IPAdapter users have
)
SDXL_CHECKPOINT = "sdxl-inpainting.safetensors"
FLUX_UNET = "flux1-fill-dev.safetensors"
FLUX_CLIP = ("clip_l.safetensors", "t5xxl_fp16.safetensors")
FLUX_VAE = "ae.safetensors"
SD15_CHECKPOINT = (
    "v1-5-pruned-emaonly.safetensors"  # ReVersion trains on plain SD1.5, not inpainting
)


# -- where the named models come from (the frontend's missing-model dialog offers Download) --
# file name -> (download URL, models/ folder). The frontend (1.47) offers Download only for a
# URL on huggingface.co or civitai and a file name ending in .safetensors/.sft/.ckpt/.pth/.pt.
HF = "https://huggingface.co"
MODEL_FILES: dict[str, tuple[str, str]] = {
    CHECKPOINT: (
        f"{HF}/stable-diffusion-v1-5/stable-diffusion-inpainting/resolve/main/sd-v1-5-inpainting.ckpt",
        "checkpoints",
    ),
    # A single-file conversion of diffusers/stable-diffusion-xl-1.0-inpainting-0.1.
    SDXL_CHECKPOINT: (
        f"{HF}/wangqyqq/sd_xl_base_1.0_inpainting_0.1.safetensors/resolve/main/"
        "sd_xl_base_1.0_inpainting_0.1.safetensors",
        "checkpoints",
    ),
    SD15_CHECKPOINT: (
        f"{HF}/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/v1-5-pruned-emaonly.safetensors",
        "checkpoints",
    ),
    CONTROLNET: (
        f"{HF}/lllyasviel/ControlNet-v1-1/resolve/main/control_v11p_sd15_canny.pth",
        "controlnet",
    ),
    # The ViT-H/14 image encoder as IPAdapter users name it (h94/IP-Adapter's model.safetensors).
    CLIP_VISION: (
        f"{HF}/h94/IP-Adapter/resolve/main/models/image_encoder/model.safetensors",
        "clip_vision",
    ),
    FLUX_UNET: (
        f"{HF}/black-forest-labs/FLUX.1-Fill-dev/resolve/main/flux1-fill-dev.safetensors",
        "diffusion_models",
    ),
    FLUX_CLIP[0]: (
        f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors",
        "text_encoders",
    ),
    FLUX_CLIP[1]: (
        f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors",
        "text_encoders",
    ),
    FLUX_VAE: (f"{HF}/black-forest-labs/FLUX.1-schnell/resolve/main/ae.safetensors", "vae"),
    mimicbrush_recipes.VAE: (
        f"{HF}/stabilityai/sd-vae-ft-mse-original/resolve/main/{mimicbrush_recipes.VAE}",
        "vae",
    ),
}
# The widgets that name a model file, per loader, and the models/ folder each reads.
LOADERS: dict[str, dict[str, str]] = {
    "CheckpointLoaderSimple": {"ckpt_name": "checkpoints"},
    "LoraLoader": {"lora_name": "loras"},
    "ControlNetLoader": {"control_net_name": "controlnet"},
    "CLIPVisionLoader": {"clip_name": "clip_vision"},
    "UNETLoader": {"unet_name": "diffusion_models"},
    "DualCLIPLoader": {"clip_name1": "text_encoders", "clip_name2": "text_encoders"},
    "VAELoader": {"vae_name": "vae"},
}
# Placeholders for the artist's own file: nothing to download (the note says so).
OWN_FILES = (LORA,)


def add_model_links(g: Graph) -> None:
    """Each loader's ``properties.models``: name, URL and folder of the files it names."""
    for node in g.nodes:
        for widget, folder in LOADERS.get(node.type, {}).items():
            name = node.values.get(widget)
            if name in OWN_FILES:
                continue
            url, directory = MODEL_FILES[name]
            assert directory == folder, (name, directory, folder)
            node.models = (node.models or []) + [{"name": name, "url": url, "directory": directory}]


def randomize_seeds(g: Graph) -> None:
    """Run twice, get a new variation: samplers' seeds randomize after each run (the
    GPT-4V node's seed stays fixed, so its cached answer is reused)."""
    for node in g.nodes:
        if node.type in ("KSampler", "SamplerCustom", "KSamplerAdvanced"):
            node.control = "randomize"


# -- the notes: markdown (the frontend's MarkdownNote) with links -------------------------------
REPO = "https://github.com/analogist-comfyui/comfyui-analogist/blob/main"
HEADINGS = {  # the recipes' first lines, as an artist reads them
    "ANALOGIST, MANUAL PROMPT (no API key, works offline)": (
        "Start here: Analogist with a typed prompt (no API key, works offline)"
    ),
    "ANALOGIST, FULL METHOD (vision-language model writes the prompt)": (
        "Analogist, full method: a vision model writes the prompt"
    ),
    "ANALOGIST, 'A ALIGNED WITH B' (the paper's corgi example)": (
        "Analogist when A is aligned with B (the paper's corgi example)"
    ),
    "ANALOGIST + LORA + CONTROLNET": "Analogist with a LoRA and a ControlNet",
    "ANALOGIST, BEST OF 4 (ranked by the paper's CLIP metric)": (
        "Analogist, best of 4 (ranked by the paper's CLIP metric)"
    ),
    "ANALOGIST ON SDXL INPAINTING (1024 grid, cells 512)": (
        "Analogist on SDXL inpainting (1024 grid, cells 512)"
    ),
    "ANALOGIST, REGION OF INTEREST ON B (only part of B changes)": (
        "Analogist on a region of B (only part of B changes)"
    ),
    "ANALOGIST ON FLUX.1 FILL (EXPERIMENTAL; 1024 grid, cells 512)": (
        "Analogist on Flux.1 Fill (experimental; 1024 grid, cells 512)"
    ),
    "ANALOGIST, TWO EXAMPLE PAIRS": "Analogist with two example pairs",
    "REVERSION: LEARN A RELATION WORD FROM A FEW IMAGES": (
        "ReVersion: learn a relation word from a few images"
    ),
    "REVERSION: USE A LEARNED RELATION IN A PROMPT": "ReVersion: use a learned relation in a prompt",
    "ANALOGIST WITH THE PAPER'S EXACT SAMPLER (diffusers DDIM)": (
        "Analogist with the paper's exact sampler (diffusers DDIM)"
    ),
    **mimicbrush_recipes.HEADINGS,
}


def markdown_note(note: str, loading: str, seed: int | None = None) -> str:
    """A recipe's note and loading list as markdown: a heading, lists, linked model files,
    the seed behaviour, links to the manual. No literal asterisks: ``*word*`` is emphasis."""
    import re

    heading, _, body = note.partition("\n")
    heading = HEADINGS.get(heading, heading)
    lines = [f"## {heading}", "", body.strip(), ""]
    for line in loading.strip().splitlines():
        if line.startswith("WHAT TO LOAD WHERE"):
            lines += ["### What to load where" + line[len("WHAT TO LOAD WHERE") :], ""]
        elif line.startswith("* "):
            lines.append("- " + line[2:])
        else:
            lines.append(line)
    if seed is not None:
        lines += [
            "",
            "### Seed",
            f"The sampler's seed changes after every run (*control after generate: randomize*), "
            f"so **Run** again gives a new variation. The paper's seed is **{seed}**: type it "
            "and set the control to *fixed* to repeat the paper's run.",
        ]
    lines += [
        "",
        f"More: [models and where they go]({REPO}/docs/models.md) · "
        f"[the guide]({REPO}/docs/guide.md) · [all workflows]({REPO}/README.md)",
    ]
    text = "\n".join(lines).replace("<R>", "`<R>`")  # not an HTML tag
    text = re.sub(r"(?<![*\w])\*(\w[^*\n]*?)\*(?![*\w])", r"**\1**", text)  # *word* -> bold
    for name, (url, _) in MODEL_FILES.items():  # the first mention of a file: its download page
        page = url.split("/resolve/")[0]
        text = text.replace(name, f"[{name}]({page})", 1)
    return text


# -- layout: groups an artist reads left to right, nothing overlapping, readable on open ----
# Each node type's group; a preview belongs to the group of the node it shows.
GROUPS = (  # numbered in reading order when laid out (a graph may lack some)
    ("Your pictures: A -> A' is the example, B gets the same change", "#3f789e"),
    ("Model", "#8a5a9e"),
    ("Prompt", "#4f8a4f"),
    ("Sampling", "#9e7a3f"),
    ("Result", "#9e3f4f"),
    ("Learn the relation", "#9e7a3f"),
)
LEARN = 5  # a training graph: its Learn node, read before the result
ORDER = (0, 1, 2, 3, LEARN, 4)
ROLES = {
    **dict.fromkeys(
        ("LoadImage", "LoadImageMask", "AnalogistGridCompose", "AnalogistExamplePair"), 0
    ),
    **dict.fromkeys(
        (
            "CheckpointLoaderSimple",
            "LoraLoader",
            "UNETLoader",
            "DualCLIPLoader",
            "VAELoader",
            "ControlNetLoader",
            "AnalogistSACPatch",
            "AnalogistCAMPatch",
        ),
        1,
    ),
    **dict.fromkeys(
        (
            "CLIPTextEncode",
            "AnalogistMarkAndArrow",
            "AnalogistGPT4VPrompt",
            "FluxGuidance",
            "Canny",
            "ControlNetApplyAdvanced",
        ),
        2,
    ),
    **dict.fromkeys(
        (
            "InpaintModelConditioning",
            "RepeatLatentBatch",
            "EmptyLatentImage",
            "KSampler",
            "SamplerCustom",
            "AnalogistDDIMSigmas",
            "AnalogistDDIMSampler",
            "VAEDecode",
        ),
        3,
    ),
    "AnalogistReVersionLearn": LEARN,
    "AnalogistMimicBrushLoader": 1,
    "AnalogistMimicBrushApply": 3,
}


def role(node: Node) -> int:
    if node.type in ROLES:
        return ROLES[node.type]
    if node.type == "PreviewImage" and node.links:
        source = next(iter(node.links.values())).node
        if ROLES.get(source.type, 4) in (0, 1, 2):
            return ROLES[source.type]
    return 4  # results: Grid Crop, Save Image, previews, ranking, CLIP vision


def columns(nodes: list[Node], count: int) -> list[list[Node]]:
    """The nodes, in order, cut into ``count`` columns with the shortest tallest column."""
    import itertools

    heights = [30 + (n.size or Graph._size(n))[1] + 24 for n in nodes]
    count = min(count, len(nodes))
    best: tuple[float, list[list[Node]]] | None = None
    for cuts in itertools.combinations(range(1, len(nodes)), count - 1):
        bounds = (0, *cuts, len(nodes))
        tallest = max(sum(heights[i:j]) for i, j in itertools.pairwise(bounds))
        if best is None or tallest < best[0]:
            best = (tallest, [nodes[i:j] for i, j in itertools.pairwise(bounds)])
    assert best is not None
    return best[1]


def columns_up_to(nodes: list[Node], limit: float) -> list[list[Node]]:
    """The nodes, in order, filling columns up to ``limit`` high each."""
    out: list[list[Node]] = []
    height = limit + 1.0
    for node in nodes:
        h = 30 + (node.size or Graph._size(node))[1]
        if height + h > limit and (not out or out[-1]):
            out.append([])
            height = 0.0
        out[-1].append(node)
        height += h + 24
    return out


def auto_layout(g: Graph, titles: dict[int, str] | None = None) -> None:
    """The arrangement that opens largest at 1920x1080 (the frontend's fit view).

    Groups in reading order (the note first) in one or two rows, each group in one to
    three columns; keeps the largest zoom (ties: the smaller area). Deterministic.
    """
    import itertools

    from comfyui_analogist.analogist_cli.workflow_format import fit_view

    # Within a group, nodes follow the data (then the order the builder made them).
    order = {n.id: (i, n.id) for i, n in enumerate(g._order())}
    notes = [n for n in g.nodes if n.type in ("Note", "MarkdownNote")]
    by_role: dict[int, list[Node]] = {}
    for node in sorted(g.nodes, key=lambda n: order[n.id]):
        if node not in notes:
            by_role.setdefault(role(node), []).append(node)
    kinds = sorted(by_role, key=ORDER.index)
    best: tuple[float, float, list[list[Group]]] | None = None
    choices = [
        [columns(by_role[k], c) for k, c in zip(kinds, counts, strict=True)]
        for counts in itertools.product((1, 2, 3), repeat=len(kinds))
    ] + [[columns_up_to(by_role[k], limit) for k in kinds] for limit in range(400, 1600, 40)]
    for choice in choices:
        groups = [Group(None, [notes])] if notes else []
        groups += [
            Group(f"{i}. {(titles or {}).get(k, GROUPS[k][0])}", cols, GROUPS[k][1])
            for i, (k, cols) in enumerate(zip(kinds, choice, strict=True), start=1)
        ]
        splits = [(len(groups),)] + [
            cut for k in (1, 2) for cut in itertools.combinations(range(1, len(groups)), k)
        ]
        for cut in splits:
            bounds = (0, *cut, len(groups)) if cut != (len(groups),) else (0, len(groups))
            rows = [groups[i:j] for i, j in itertools.pairwise(bounds)]
            trial = Graph(g.defs)
            trial.nodes = g.nodes
            trial.arrange(rows)
            x0, y0, x1, y1 = trial.bounds()
            scale = fit_view(trial.bounds())["scale"]
            area = (x1 - x0) * (y1 - y0)
            if best is None or (round(scale, 3), -area) > (round(best[0], 3), -best[1]):
                best = (scale, area, rows)
    assert best is not None
    g.groups = []
    g.arrange(best[2])


def finish(g: Graph, titles: dict[int, str] | None = None) -> dict:
    """Lay the graph out in groups (``titles`` renames some, by role), add the download
    links and seed controls, serialise."""
    auto_layout(g, titles)
    add_model_links(g)
    randomize_seeds(g)
    return g.to_ui()
