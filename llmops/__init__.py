"""llmops"""
