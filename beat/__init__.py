"""The beat schedule and the periodic tasks it drives (they run on workers, `control` queue)."""
