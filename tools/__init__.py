"""Build tooling for the book: executing chapters and building the HTML. Not part of the library."""
