"""Explanations: token attributions (``attributions``) and the page that shows them (``report``)."""
