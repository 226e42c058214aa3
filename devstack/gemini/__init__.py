"""A local stand-in for Gemini's generateContent REST API: deterministic answers, test-controlled faults."""
