"""A Flask-Migrate tutorial app (users, posts, followers) switched to safe-migrate."""
