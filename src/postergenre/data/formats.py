"""Image file extensions the data layer accepts."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")


def is_image_name(name: str) -> bool:
    """True for a file name with an accepted image extension (any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)
