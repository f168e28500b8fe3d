// Analogist Rank Candidates: show the scores on the node after it runs.
// (The display itself: text_display.js.)
import { registerTextDisplay } from "./text_display.js";

registerTextDisplay({
  extension: "Analogist.RankCandidates",
  nodeId: "AnalogistRankCandidates",
  widgetName: "candidate_scores",
  placeholder: "scores of the candidates, best first (after a run)",
  label: "Scores of the B' candidates",
  what: "candidate scores",
});
