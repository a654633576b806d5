"""Static before/after gallery of enhancements: cards → cached images → one self-contained HTML page."""
