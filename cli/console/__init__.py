"""The trader's console: typer commands and the Textual dashboard, acting as the signed-in user."""
