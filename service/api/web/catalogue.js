// Catalogue: search and page through songs, read and edit one, delete it, add many.
import * as api from "./api.js";
import { clock, confirmDialog, dateTime, dropZone, errorText, formatBytes, h, keepingFocus, message } from "./ui.js";

const PAGE_SIZES = [10, 20, 50, 100];
const FIELDS = [
  ["title", "Title"],
  ["artist", "Artist"],
  ["album", "Album"],
  ["isrc", "ISRC"],
  ["external_id", "External id"],
];

export function mount(main) {
  const state = { q: "", offset: 0, total: 0, limit: 20 };
  const status = h("div", { class: "status-line" });
  const search = h("input", {
    id: "song-search",
    type: "search",
    placeholder: "Title, artist, album, ISRC or external id",
  });
  const body = h("tbody");
  const pager = h("p", { class: "pager" });
  const detail = h("section", { class: "detail", "aria-labelledby": "detail-heading", hidden: true });

  async function load() {
    try {
      const page = await api.listSongs({ q: state.q, limit: state.limit, offset: state.offset });
      state.total = page.total;
      if (page.items.length === 0 && state.offset > 0) {
        state.offset = Math.max(0, state.offset - state.limit);
        return load();
      }
      keepingFocus(() => {
        body.replaceChildren(...page.items.map(row));
        if (page.items.length === 0) {
          const text = state.q ? `No song matches “${state.q}”.` : "The catalogue is empty: add songs below.";
          body.append(h("tr", {}, h("td", { colspan: 6, class: "empty" }, text)));
        }
        renderPager(page);
      });
      if (status.querySelector(".error")) status.replaceChildren();
    } catch (error) {
      message(status, `Could not load the catalogue: ${errorText(error)}`);
    }
  }

  function row(song) {
    return h(
      "tr",
      {},
      h("td", { "data-label": "Title" }, h("button", { class: "link", onclick: () => openSong(song.id) }, song.title)),
      h("td", { "data-label": "Artist" }, song.artist || "—"),
      h("td", { "data-label": "Album" }, song.album || "—"),
      h("td", { "data-label": "ISRC" }, song.isrc || "—"),
      h("td", { "data-label": "External id" }, song.external_id || "—"),
      h("td", { "data-label": "Duration", class: "num" }, clock(song.duration_s, 0)),
    );
  }

  const rows = h("select", {
    id: "song-rows",
    onchange: () => { state.limit = Number(rows.value); state.offset = 0; load(); },
  }, PAGE_SIZES.map((n) => h("option", { value: n, selected: n === state.limit }, n)));

  function renderPager(page) {
    const first = page.total ? page.offset + 1 : 0;
    const last = page.offset + page.items.length;
    pager.replaceChildren(
      h("button", {
        class: "secondary",
        "data-focus-key": "songs:previous",
        disabled: page.offset === 0,
        onclick: () => { state.offset = Math.max(0, state.offset - state.limit); load(); },
      }, "Previous"),
      h("span", { "aria-live": "polite" }, ` ${first}–${last} of ${page.total} `),
      h("button", {
        class: "secondary",
        "data-focus-key": "songs:next",
        disabled: last >= page.total,
        onclick: () => { state.offset += state.limit; load(); },
      }, "Next"),
      h("label", { for: "song-rows" }, "Rows per page"),
      rows,
    );
  }

  async function openSong(id) {
    detail.hidden = false;
    detail.replaceChildren(h("p", {}, "Loading…"));
    try {
      renderDetail(await api.getSong(id));
    } catch (error) {
      message(detail, `Could not open song ${id}: ${errorText(error)}`);
    }
  }

  function renderDetail(song) {
    const feedback = h("div");
    const inputs = {};
    const form = h(
      "form",
      {
        class: "edit-grid",
        onsubmit: async (event) => {
          event.preventDefault();
          const changes = {};
          for (const [name] of FIELDS) {
            const value = inputs[name].value.trim();
            if (value !== (song[name] || "")) changes[name] = value || null;
          }
          if (Object.keys(changes).length === 0) {
            message(feedback, "Nothing changed.", "info");
            return;
          }
          try {
            song = await api.updateSong(song.id, changes);
            message(feedback, "Saved.", "ok");
            load();
          } catch (error) {
            message(feedback, `Not saved: ${errorText(error)}`);
          }
        },
      },
      FIELDS.map(([name, label]) => {
        inputs[name] = h("input", { id: `edit-${name}`, name, value: song[name] || "", required: name === "title" });
        return h("div", { class: "field" }, h("label", { for: `edit-${name}` }, label), inputs[name]);
      }),
      h("div", { class: "actions" },
        h("button", { type: "submit" }, "Save changes"),
        h("button", {
          type: "button",
          class: "danger",
          onclick: async () => {
            const sure = await confirmDialog(
              `Delete “${song.title}” and all its fingerprints? This cannot be undone.`,
              "Delete song",
            );
            if (!sure) return;
            try {
              await api.deleteSong(song.id);
              detail.hidden = true;
              message(status, `Deleted “${song.title}”.`, "ok");
              load();
            } catch (error) {
              message(feedback, `Not deleted: ${errorText(error)}`);
            }
          },
        }, "Delete…"),
        h("button", { type: "button", class: "secondary", onclick: () => { detail.hidden = true; } }, "Close"),
      ),
    );
    detail.replaceChildren(
      h("h2", { id: "detail-heading" }, song.title),
      h("dl", { class: "facts" },
        h("dt", {}, "Song id"), h("dd", {}, song.id),
        h("dt", {}, "Duration"), h("dd", {}, `${clock(song.duration_s)} (${song.duration_s} s)`),
        h("dt", {}, "Fingerprints"), h("dd", {}, song.fingerprint_count.toLocaleString()),
        h("dt", {}, "Indexed"), h("dd", {}, song.created_at ? dateTime(song.created_at) : "—"),
      ),
      form,
      feedback,
    );
    detail.scrollIntoView({ block: "nearest" });
    inputs.title.focus();
  }

  let typing = null;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.q = search.value.trim(); state.offset = 0; load(); }, 250);
  });

  main.append(
    h("h1", {}, "Catalogue"),
    h("form", { class: "inline-form", role: "search", onsubmit: (e) => { e.preventDefault(); state.q = search.value.trim(); state.offset = 0; load(); } },
      h("label", { for: "song-search" }, "Search songs"), search, h("button", { type: "submit" }, "Search")),
    status,
    h("div", { class: "table-wrap" },
      h("table", { class: "songs" },
        h("caption", { class: "visually-hidden" }, "Songs in the catalogue"),
        h("thead", {}, h("tr", {}, ...["Title", "Artist", "Album", "ISRC", "External id", "Duration"].map((t) => h("th", { scope: "col" }, t)))),
        body)),
    pager,
    detail,
    addSongs(load),
  );
  load();
}

// Add songs: files dropped or picked become rows with their own metadata fields, uploaded one
// after the other, each with its progress and the API's answer.
function addSongs(reload) {
  const list = h("ol", { class: "uploads", "aria-label": "Files to add" });
  const start = h("button", { type: "button", disabled: true }, "Add to catalogue");
  const queue = [];

  function addFiles(files) {
    for (const file of files) {
      const inputs = {};
      const progress = h("progress", { max: 1, value: 0, "aria-label": `Upload of ${file.name}` });
      const result = h("p", { class: "result", "aria-live": "polite" }, "Waiting");
      const item = h(
        "li",
        { class: "upload" },
        h("p", { class: "file-name" }, h("strong", {}, file.name), ` · ${formatBytes(file.size)}`),
        h("div", { class: "edit-grid compact" },
          FIELDS.map(([name, label]) => {
            const id = `add-${queue.length}-${name}`;
            inputs[name] = h("input", { id, name, placeholder: name === "title" ? "from the file’s tags" : "" });
            return h("div", { class: "field" }, h("label", { for: id }, label), inputs[name]);
          })),
        progress,
        result,
      );
      queue.push({ file, inputs, progress, result, item, done: false });
      list.append(item);
    }
    start.disabled = !queue.some((entry) => !entry.done);
  }

  start.addEventListener("click", async () => {
    start.disabled = true;
    for (const entry of queue.filter((e) => !e.done)) {
      entry.done = true;
      const fields = Object.fromEntries(Object.entries(entry.inputs).map(([k, input]) => [k, input.value.trim()]));
      entry.result.textContent = "Uploading…";
      entry.item.dataset.state = "busy";
      try {
        const { status, body } = await api.addSong(entry.file, fields, (share) => {
          entry.progress.value = share;
          if (share >= 1) entry.result.textContent = "Fingerprinting…";
        });
        entry.progress.value = 1;
        entry.item.dataset.state = status === 201 ? "created" : "known";
        entry.result.textContent = status === 201
          ? `Created: “${body.title}” (song ${body.id}, ${body.fingerprint_count.toLocaleString()} fingerprints)`
          : `Already known as “${body.title}” (song ${body.id})`;
      } catch (error) {
        entry.item.dataset.state = "error";
        entry.result.textContent = `Error: ${errorText(error)}`;
      }
    }
    reload();
  });

  const { zone } = dropZone({ label: "Add songs", multiple: true, accept: "audio/*,video/*", onFiles: addFiles });
  return h("section", { class: "add", "aria-labelledby": "add-heading" },
    h("h2", { id: "add-heading" }, "Add songs"),
    h("p", { class: "hint" }, "Any audio or video file. Empty fields take the file’s tags, then its name."),
    zone, list, start);
}
