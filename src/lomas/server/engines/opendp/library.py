"""The OpenDP library as the server uses it: its process-wide features and the wording of its errors."""

from __future__ import annotations

from opendp.mod import OpenDPException, disable_features, enable_features

from lomas.server.config import OpenDPSettings


def switch_features(settings: OpenDPSettings) -> None:
    """Set OpenDP's process-wide features from the settings (and only from them)."""
    features = {
        "contrib": settings.contrib,
        "floating-point": settings.floating_point,
        "honest-but-curious": settings.honest_but_curious,
    }
    enable_features(*(name for name, on in features.items() if on))
    disable_features(*(name for name, on in features.items() if not on))


def library_message(error: OpenDPException) -> str:
    """OpenDP's own words; a missing feature is the server's configuration, which no request changes."""
    text = error.variant if error.message is None else f"{error.variant}: {error.message}"
    if "but not enabled" in text:
        return f"{text.split('. See ')[0]} on this server (OpenDP features are set by its configuration)."
    return text
