"""Multi-step jobs over collections (image batches, the demo), built on the library's steps."""
