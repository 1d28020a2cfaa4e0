"""The web app's server side without the web framework: the server that reads and animates the page's forms
(server.py), its job queue (jobs.py) and the checks of uploads (uploads.py). app.py builds the page on them."""
