"""The one exception type for errors a user can cause; messages name the input and the fix."""


class VidiffError(Exception):
    """A problem with user input (path, file, shape, config key, option) that the user can fix."""


class VideoReadError(VidiffError):
    """A video file could not be read: missing, empty, truncated, not a video, or out of range."""


class ConfigError(VidiffError):
    """A config file or override is wrong: unknown key, bad type, bad value."""
