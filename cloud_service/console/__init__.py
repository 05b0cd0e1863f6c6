"""The web console's static files (index.html, ES modules, CSS), served by cloud_service.http.console."""
