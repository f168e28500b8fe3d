"""A test-only ComfyUI node that reports where Analogist's attention patches fired.

Linked into the ``custom_nodes`` of the test server next to the pack. It takes the
patched MODEL that the KSampler used and that KSampler's LATENT (so it runs after
sampling), reads the ``calls`` counters of the Analogist patch objects in the model's
replace slots and patch lists, returns them as UI text (visible in ``/history``) and resets them, so each
report covers the sampling since the previous one.

Why a probe node and not a log line: the counters live in the server process; this reads
them through ComfyUI's own output channel with no change to the pack's code and no
log parsing.
"""

from __future__ import annotations

import json


def _key(key) -> str:
    return ":".join(str(part) for part in key)


class AnalogistTestPatchProbe:
    CATEGORY = "Analogist/testing"
    FUNCTION = "report"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "samples": ("LATENT",)}}

    def report(self, model, samples):
        options = model.model_options.get("transformer_options", {})
        # SAC: attn1 replace slots, one per block. CAM: an attn2 output patch that
        # carries its blocks (``to_out``), since output patches are a list, not keyed.
        found = [
            (slot_name, [key], fn)
            for slot_name, slots in sorted(options.get("patches_replace", {}).items())
            for key, fn in slots.items()
        ]
        found += [
            (slot_name, list(getattr(fn, "to_out", {})), fn)
            for slot_name, patches in sorted(options.get("patches", {}).items())
            for fn in patches
        ]
        report: dict[str, dict] = {}
        seen = []
        for slot_name, keys, fn in found:
            kind = getattr(fn, "analogist_kind", None)
            if kind is None:
                continue
            entry = report.setdefault(kind, {"slot": slot_name, "registered": [], "calls": {}})
            entry["registered"].extend(_key(key) for key in keys)
            if all(fn is not other for other in seen):
                seen.append(fn)
                entry["calls"].update({_key(k): n for k, n in fn.calls.items()})
        for fn in seen:
            fn.calls.clear()
        for entry in report.values():
            entry["registered"].sort()
        return {"ui": {"text": [json.dumps(report, sort_keys=True)]}}


NODE_CLASS_MAPPINGS = {"AnalogistTestPatchProbe": AnalogistTestPatchProbe}
NODE_DISPLAY_NAME_MAPPINGS = {"AnalogistTestPatchProbe": "Analogist test: patch probe"}
