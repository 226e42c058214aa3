"""A stand-in for Telegram's Bot API (sendMessage, getMe): fault injection, a record of sent messages."""
