"""What an operator does: accounts, the requests' queue, figures, exports and retention."""
