// Deliver the authorization response to the app (response_mode=form_post).
document.getElementById("response").submit();
