"""The actorhub command line."""
