"""FeatherFace: small, fast face detection (V1 teacher, V2 student)."""

from featherface.version import __version__

__all__ = ["__version__", "FaceDetector", "Face"]


def __getattr__(name: str):
    # Lazy so that `import featherface` stays cheap and the CLI can report import errors cleanly.
    if name in ("FaceDetector", "Face"):
        from featherface import api

        return getattr(api, name)
    raise AttributeError(f"module 'featherface' has no attribute {name!r}")
