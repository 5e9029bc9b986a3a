"""The Densely Captioned Images (DCI) release and its 77-token summarised form (sDCI)."""
