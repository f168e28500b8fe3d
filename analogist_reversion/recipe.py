"""The official ReVersion recipe's defaults and its two word lists."""

from __future__ import annotations

from dataclasses import dataclass

PLACEHOLDER = "<R>"

# The 56 English prepositions ReVersion draws its positives from (alphabetical).
RELATION_WORDS: tuple[str, ...] = (
    "aboard", "about", "above", "across", "after", "against", "along", "alongside",
    "amid", "amidst", "among", "amongst", "anti", "around", "astride", "at", "atop",
    "before", "behind", "below", "beneath", "beside", "between", "beyond", "by", "down",
    "following", "from", "in", "including", "inside", "into", "near", "of", "off", "on",
    "onto", "opposite", "out", "outside", "over", "past", "regarding", "round", "through",
    "throughout", "to", "toward", "towards", "under", "underneath", "up", "upon", "versus",
    "with", "within",
)  # fmt: skip

# English stop words (the common NLTK-style list, 127 words) never used as negatives.
STOP_WORDS: tuple[str, ...] = (
    "i", "me", "my", "myself", "we", "our", "ours", "ourselves", "you", "your", "yours",
    "yourself", "yourselves", "he", "him", "his", "himself", "she", "her", "hers", "herself",
    "it", "its", "itself", "they", "them", "their", "theirs", "themselves", "what", "which",
    "who", "whom", "this", "that", "these", "those", "am", "is", "are", "was", "were", "be",
    "been", "being", "have", "has", "had", "having", "do", "does", "did", "doing", "a", "an",
    "the", "and", "but", "if", "or", "because", "as", "until", "while", "of", "at", "by",
    "for", "with", "about", "against", "between", "into", "through", "during", "before",
    "after", "above", "below", "to", "from", "up", "down", "in", "out", "on", "off", "over",
    "under", "again", "further", "then", "once", "here", "there", "when", "where", "why",
    "how", "all", "any", "both", "each", "few", "more", "most", "other", "some", "such", "no",
    "nor", "not", "only", "own", "same", "so", "than", "too", "very", "s", "t", "can", "will",
    "just", "don", "should", "now",
)  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    """One training run's settings; the defaults are the paper's (official ``train.py``).

    ``base_learning_rate`` is multiplied by ``batch_size * gradient_accumulation`` (the
    official ``--scale_lr``): 2.5e-4 x 2 x 4 = 2e-3.
    """

    max_steps: int = 3000
    batch_size: int = 2
    gradient_accumulation: int = 4
    base_learning_rate: float = 2.5e-4
    scale_lr: bool = True
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    weight_decay: float = 1e-2
    seed: int = 2023
    resolution: int = 512
    repeats: int = 100
    initializer_token: str = "and"
    denoise_weight: float = 1.0
    steer_weight: float = 0.01
    num_positives: int = 4
    temperature: float = 0.07
    importance_sampling: bool = True
    scaled_cosine_alpha: float = 0.5
    save_every: int = 500

    @property
    def learning_rate(self) -> float:
        if not self.scale_lr:
            return self.base_learning_rate
        return self.base_learning_rate * self.batch_size * self.gradient_accumulation

    def check(self) -> None:
        """Raise ValueError naming the setting when one is out of range."""
        positive_ints = (
            "max_steps",
            "batch_size",
            "gradient_accumulation",
            "resolution",
            "repeats",
        )
        for name in positive_ints:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.resolution % 8:
            raise ValueError(
                f"resolution must be a multiple of 8 (the VAE's factor), got {self.resolution}"
            )
        if not 0 <= self.num_positives <= len(RELATION_WORDS):
            raise ValueError(
                f"num_positives must be 0..{len(RELATION_WORDS)} (the prepositions drawn per image), "
                f"got {self.num_positives}"
            )
        if self.steer_weight > 0 and self.num_positives == 0:
            raise ValueError("steer_weight > 0 needs num_positives >= 1 (or set steer_weight to 0)")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 <= self.scaled_cosine_alpha < 1:
            raise ValueError(
                f"scaled_cosine_alpha must be in [0, 1), got {self.scaled_cosine_alpha}"
            )
        if self.base_learning_rate <= 0:
            raise ValueError(f"learning rate must be > 0, got {self.base_learning_rate}")
        if self.save_every < 0:
            raise ValueError(
                f"save_every must be >= 0 (0: no intermediate saves), got {self.save_every}"
            )
