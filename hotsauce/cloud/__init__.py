"""Sending a finished set to a cloud's image service (`hotsauce upload`)."""
