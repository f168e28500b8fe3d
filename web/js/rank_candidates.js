// Analogist Rank Candidates: show the scores on the node after it runs.
//
// The node returns {"ui": {"text": [one line per B]}}; ComfyUI hands that to onExecuted.
// The display widget is read-only and never serialized: it adds nothing to saved
// workflows, image metadata or the prompt sent to the server.
// Served as /extensions/<pack>/js/rank_candidates.js, hence three levels up to /scripts.
import { app } from "../../../scripts/app.js";

const NODE_ID = "AnalogistRankCandidates";
const WIDGET_NAME = "candidate_scores";

// The multiline STRING widget comes from the frontend's legacy module; if a frontend no
// longer ships it, fall back to LiteGraph's one-line text widget.
let ComfyWidgets = null;
try {
  ({ ComfyWidgets } = await import("../../../scripts/widgets.js"));
} catch (error) {
  console.info("[Analogist] scripts/widgets.js unavailable; using a one-line display", error);
}

function linesOf(message) {
  const text = message?.text;
  if (Array.isArray(text)) return text.map((t) => String(t));
  return text == null ? [] : [String(text)];
}

function displayWidget(node) {
  const existing = node.widgets?.find((w) => w.name === WIDGET_NAME);
  if (existing) return existing;
  let widget;
  if (ComfyWidgets?.STRING) {
    widget = ComfyWidgets.STRING(node, WIDGET_NAME, ["STRING", { multiline: true }], app).widget;
  } else {
    widget = node.addWidget("text", WIDGET_NAME, "", () => {}, {});
  }
  widget.serialize = false; // not in the workflow's widgets_values
  if (widget.options) widget.options.serialize = false; // not in the API prompt
  const input = widget.inputEl ?? widget.element;
  if (input) input.readOnly = true;
  const size = node.computeSize?.();
  if (size) node.setSize?.([Math.max(node.size[0], size[0]), Math.max(node.size[1], size[1])]);
  return widget;
}

app.registerExtension({
  name: "Analogist.RankCandidates",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_ID) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const result = onExecuted?.apply(this, arguments);
      try {
        const widget = displayWidget(this);
        const lines = linesOf(message);
        widget.value = ComfyWidgets?.STRING ? lines.join("\n") : lines.join(" | ");
        this.setDirtyCanvas?.(true, true);
      } catch (error) {
        console.warn("[Analogist] could not show the candidate scores", error);
      }
      return result;
    };
  },
});
