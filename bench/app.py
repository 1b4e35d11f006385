"""The portal plus one page that needs no login, for measuring what signing in costs a request."""

from flask import render_template

from portal import create_app


def create_bench_app():
    """The portal with /bench/open: the handbook page rendered without any login check."""
    app = create_app()
    handbook = next(page for page in app.config["PAGES"] if page["slug"] == "handbook")

    @app.route("/bench/open")
    def open_handbook():
        return render_template("page.html", page=handbook)

    return app
