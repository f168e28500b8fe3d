import json
from pathlib import Path
import pytest
pytestmark = [pytest.mark.frontend, pytest.mark.host]
ROOT = Path(__file__).resolve().parents[2]

def test_measure(frontend):
    types = sorted({n["type"] for p in (ROOT / "workflows").glob("*.json") for n in json.loads(p.read_text())["nodes"]} | {"MarkdownNote"})
    sizes = frontend.page.evaluate("""(types) => Object.fromEntries(types.map(t => {
        const n = LiteGraph.createNode(t); if (!n) return [t, null];
        return [t, {size: [...n.size], compute: [...n.computeSize()], title: LiteGraph.NODE_TITLE_HEIGHT}];
    }))""", types)
    # After loading: actual sizes
    frontend.drop_workflow(ROOT / "workflows" / "analogist_lora_controlnet.json")
    loaded = frontend.page.evaluate("() => app.rootGraph.nodes.map(n => [n.type, n.title, [...n.pos], [...n.size], [...n.computeSize()]])")
    ds = frontend.page.evaluate("() => ({scale: app.canvas.ds.scale, offset: [...app.canvas.ds.offset], lq: LiteGraph.LowQualityRenderingZoomThreshold ?? null, s: app.ui.settings.getSettingValue('LiteGraph.Canvas.LowQualityRenderingZoomThreshold')})")
    Path("/tmp/tpl22/sizes.json").write_text(json.dumps({"sizes": sizes, "loaded": loaded, "ds": ds}, indent=1))
