// Analogist: show a node's text result (the GPT-4V prompts, the candidate scores) on the
// node after it runs. One implementation for every such node; each node's file registers
// its own extension with it.
//
// The node returns {"ui": {"text": [line, ...]}}; ComfyUI hands that to onExecuted.
// The display widget is read-only and never serialized: it adds nothing to saved
// workflows, image metadata or the prompt sent to the server.
// Served as /extensions/<pack>/js/text_display.js, hence three levels up to /scripts.
//
// Only scripts/app.js is imported: the frontend documents it for extensions. The
// multiline text box is the node's own DOM widget (LGraphNode.addDOMWidget, in the
// legacy frontend since 2024 and in the current one), not ComfyWidgets from
// scripts/widgets.js, which the current frontend flags as an internal module.
import { app } from "../../../scripts/app.js";

function linesOf(message) {
  const text = message?.text;
  if (Array.isArray(text)) return text.map((t) => String(t));
  return text == null ? [] : [String(text)];
}

function textBox(placeholder, label) {
  const area = document.createElement("textarea");
  area.readOnly = true;
  area.rows = 3;
  area.className = "comfy-multiline-input analogist-text-display";
  area.placeholder = placeholder;
  area.setAttribute("aria-label", label);
  Object.assign(area.style, { width: "100%", boxSizing: "border-box", resize: "none", opacity: "0.85" });
  return area;
}

function displayWidget(node, spec) {
  const existing = node.widgets?.find((w) => w.name === spec.widgetName);
  if (existing) return existing;
  let widget;
  if (typeof node.addDOMWidget === "function") {
    const area = textBox(spec.placeholder, spec.label);
    widget = node.addDOMWidget(spec.widgetName, "analogist_text", area, {
      getValue: () => area.value,
      setValue: (value) => {
        area.value = value ?? "";
      },
      serialize: false,
      getMinHeight: () => 60,
    });
    widget.inputEl = area;
  } else {
    // A frontend without DOM widgets: LiteGraph's one-line text widget.
    widget = node.addWidget("text", spec.widgetName, "", () => {}, { serialize: false });
  }
  widget.serialize = false; // not in the workflow's widgets_values
  if (widget.options) widget.options.serialize = false; // not in the API prompt
  const size = node.computeSize?.();
  if (size) node.setSize?.([Math.max(node.size[0], size[0]), Math.max(node.size[1], size[1])]);
  return widget;
}

function show(node, spec, message) {
  const widget = displayWidget(node, spec);
  const lines = linesOf(message);
  widget.value = widget.inputEl ? lines.join("\n") : lines.join(" | ");
  node.setDirtyCanvas?.(true, true);
}

// A node locator id is "<node id>" in the root graph, "<subgraph id>:<node id>" inside one.
function nodeAt(locator) {
  const root = app.rootGraph ?? app.graph;
  const parts = String(locator).split(":");
  if (parts.length === 1) return root?.getNodeById?.(parts[0]) ?? root?.getNodeById?.(Number(parts[0]));
  const graph = root?.subgraphs?.get?.(parts[parts.length - 2]);
  return graph?.getNodeById?.(parts[parts.length - 1]) ?? graph?.getNodeById?.(Number(parts[parts.length - 1]));
}

/**
 * Register an extension that shows `nodeId`'s {"ui": {"text": [...]}} on the node.
 * spec: {extension, nodeId, widgetName, placeholder, label, what}
 */
export function registerTextDisplay(spec) {
  app.registerExtension({
    name: spec.extension,
    // The frontend (1.x) keeps each workflow tab's outputs and hands them back here when a
    // tab is shown again (and when a past run is opened from the queue): the display is
    // rebuilt from them, so the answer comes back with its tab and is still never saved.
    onNodeOutputsUpdated(outputs) {
      for (const [locator, message] of Object.entries(outputs ?? {})) {
        if (message?.text == null) continue;
        try {
          const node = nodeAt(locator);
          if (node?.constructor?.comfyClass !== spec.nodeId && node?.type !== spec.nodeId) continue;
          show(node, spec, message);
        } catch (error) {
          console.warn(`[Analogist] could not show the ${spec.what} again`, error);
        }
      }
    },
    async beforeRegisterNodeDef(nodeType, nodeData) {
      if (nodeData?.name !== spec.nodeId) return;
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        const result = onExecuted?.apply(this, arguments);
        try {
          show(this, spec, message);
        } catch (error) {
          console.warn(`[Analogist] could not show the ${spec.what}`, error);
        }
        return result;
      };
      // The current frontend leaves widgets with serialize === false out of widgets_values;
      // the legacy one saves every widget's value, so take the display out there.
      const onSerialize = nodeType.prototype.onSerialize;
      nodeType.prototype.onSerialize = function (data) {
        const result = onSerialize?.apply(this, arguments);
        const values = data?.widgets_values;
        const index = this.widgets?.findIndex((w) => w.name === spec.widgetName) ?? -1;
        if (Array.isArray(values) && index >= 0 && values.length === this.widgets.length) {
          values.splice(index, 1);
        }
        return result;
      };
    },
  });
}
