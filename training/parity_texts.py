"""The sentences every export is checked on against PyTorch (training/export.py), and the
fill-mask graph's parity (training/fill_mask_graph.py)."""

# Varied length, punctuation, casing, numbers and rare words, so that a precision loss
# shows up. Our own text; no dataset needed at run time.
PARITY_TEXTS = [
    "The service was quick and the staff were friendly.",
    "I waited forty minutes and nobody answered the phone.",
    "Where is the nearest train station?",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "ok",
    "The quarterly report shows revenue of 4.2 million dollars, up 12% on last year.",
    "Please reset my password; I can't log in since the update on 3 March.",
    "A dull, plodding film with no surprises at all.",
    "What a wonderful, moving performance by the whole cast!",
    "The mitochondria is the powerhouse of the cell.",
    "Refunds are issued within five working days of receiving the returned item.",
    "Er zijn geen treinen tussen Amsterdam en Utrecht vanwege werkzaamheden.",
    "def add(a, b): return a + b",
    "Who wrote the novel Moby-Dick, and when was it first published?",
    "The committee will reconvene after the holidays to discuss the zoning proposal in detail, "
    "including the objections raised by residents of the northern district.",
    "Spam: WIN a FREE cruise!!! Text YES to 80085 now",
    "The battery lasts two days, but the charger stopped working after a week.",
    "Is it safe to take ibuprofen together with paracetamol?",
    "Le musée est fermé le lundi et les jours fériés.",
    "Our flight was delayed six hours and the airline offered no explanation.",
    "Stir the sauce gently until it thickens, then season with salt and pepper.",
    "BREAKING: central bank raises interest rates by half a percentage point",
]
