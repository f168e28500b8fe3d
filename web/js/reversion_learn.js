// Analogist ReVersion (learn relation): show what to type (embedding:<name>) on the node
// after a run. (The display itself: text_display.js.)
import { registerTextDisplay } from "./text_display.js";

registerTextDisplay({
  extension: "Analogist.ReVersionLearn",
  nodeId: "AnalogistReVersionLearn",
  widgetName: "relation_shown",
  placeholder: "after training: what to type in a prompt (embedding:<name>)",
  label: "Type this in a prompt",
  what: "relation text",
});
