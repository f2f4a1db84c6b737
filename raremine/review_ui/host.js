// raremine review: what every component shares. raremine/screens/state.py puts this file before
// each component's own script (keys.js, viewer.js), so that they call host() from here.

// our own element inside the component's root: Streamlit keeps the component's <style> there too
function host(parent) {
  let h = Array.from(parent.children).find((e) => e.classList && e.classList.contains("rm-host"));
  if (!h) {
    h = document.createElement("div");
    h.className = "rm-host";
    parent.appendChild(h);
  }
  return h;
}
