"""The RoboCam firmware's WebSocket camera: its dialect and the link that speaks it."""
