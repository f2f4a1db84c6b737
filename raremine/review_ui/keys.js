// raremine review: the keyboard help ("?") and leaving a text field with Enter or Escape,
// so that the next key is a shortcut again (shortcuts never act while a text field has focus).

let current = null;

// host(parent): from host.js, put before this file

function textField(e) {
  const el = e.target;
  if (!el || !el.tagName) return null;
  if (el.tagName === "TEXTAREA" || el.isContentEditable) return el;
  if (el.tagName === "INPUT" && !["checkbox", "radio", "range", "button", "submit"].includes((el.type || "").toLowerCase())) return el;
  return null;
}

export default function (component) {
  const { data, parentElement } = component;
  if (current) current.destroy();
  const d = data || {};
  const box = document.createElement("div");
  box.className = "rm-help";
  box.hidden = true;
  box.setAttribute("role", "dialog");
  box.setAttribute("aria-label", "keyboard shortcuts");
  const card = document.createElement("div");
  card.className = "rm-help-card";
  const h = document.createElement("h3");
  h.textContent = "Keyboard shortcuts";
  card.appendChild(h);
  const table = document.createElement("table");
  for (const [key, what] of d.keys || []) {
    const tr = document.createElement("tr");
    const k = document.createElement("td");
    const kbd = document.createElement("kbd");
    kbd.textContent = key;
    k.appendChild(kbd);
    const w = document.createElement("td");
    w.textContent = what;
    tr.append(k, w);
    table.appendChild(tr);
  }
  card.appendChild(table);
  const p = document.createElement("p");
  p.textContent = "Shortcuts never act while you type in a text field; Enter or Escape leaves the field. ? or Escape closes this.";
  card.appendChild(p);
  box.appendChild(card);
  box.addEventListener("click", (e) => { if (e.target === box) box.hidden = true; });
  host(parentElement).replaceChildren(box);

  const onKey = (e) => {
    const field = textField(e);
    if (field) {
      if (e.key === "Escape" || (e.key === "Enter" && field.tagName === "INPUT")) {
        // let Streamlit take the value first (Enter commits it), then leave the field
        setTimeout(() => field.blur(), 0);
      }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "?") { box.hidden = !box.hidden; e.preventDefault(); e.stopPropagation(); }
    else if (e.key === "Escape" && !box.hidden) { box.hidden = true; e.preventDefault(); }
  };
  document.addEventListener("keydown", onKey, true);
  const me = { destroy() { document.removeEventListener("keydown", onKey, true); if (current === me) current = null; } };
  current = me;
  return () => me.destroy();
}
