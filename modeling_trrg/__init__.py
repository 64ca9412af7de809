"""The hub bundle: flat remote-code files copied into every saved TRRG model folder."""
