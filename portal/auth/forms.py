"""The login form (Flask-WTF; CSRFProtect checks the token of every POST, logout's too)."""

from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, PasswordField, StringField
from wtforms.validators import InputRequired


class LoginForm(FlaskForm):
    """Username, password, remember me, and where to go afterwards.

    Lengths and characters are checked by the directory layer (USERNAME_MAX_LENGTH,
    PASSWORD_MAX_LENGTH), so a refusal there reads as any other failed login.
    """

    class Meta:
        # CSRFProtect already checks every POST before any view runs (this one included):
        # a second check here would only sign and verify the same token twice.
        csrf = False

    username = StringField("Username", validators=[InputRequired()])
    password = PasswordField("Password", validators=[InputRequired()])
    remember = BooleanField("Keep me signed in on this device")
    next = HiddenField()
