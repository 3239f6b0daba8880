// Clicking an account in the list fills in its username.
document.querySelectorAll("button.pick").forEach(function (button) {
  button.addEventListener("click", function () {
    document.getElementById("username").value = button.dataset.username;
    document.getElementById("password").focus();
  });
});
