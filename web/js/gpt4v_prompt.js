// Analogist Vision Prompt (id AnalogistGPT4VPrompt): show the model's prompts on the node after it runs.
// (The display itself: text_display.js.)
import { registerTextDisplay } from "./text_display.js";

registerTextDisplay({
  extension: "Analogist.GPT4VPrompt",
  nodeId: "AnalogistGPT4VPrompt",
  widgetName: "vlm_answer",
  placeholder: "prompt from the vision model (after a run)",
  label: "Prompt written by the vision model",
  what: "vision model's prompts",
});
