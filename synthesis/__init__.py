"""raremine.synthesis: new training images with exact masks, and label formats.

Arrays and files in, arrays and files out; this package imports nothing from
``mining`` or the app.
"""
