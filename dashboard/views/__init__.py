"""One module per dashboard page, each exposing `render()`."""
