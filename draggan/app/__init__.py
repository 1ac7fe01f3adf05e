"""The app's side of the project: per-tab state and the stores that bound it (``state``); serving the app
(``launch``: the warm-up beside the server, share links).
The Gradio handlers and layout are ``app.py`` at the top of the repository."""
