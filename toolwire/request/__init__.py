"""What a chat request means: its checks, its limits, its errors, and its plain forms."""
