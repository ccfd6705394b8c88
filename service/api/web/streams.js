// Streams: every stream with what is on air (refreshed on its own), then one stream's airplay
// log with a date range, paging and CSV export, and its day as a timeline of plays.
import * as api from "./api.js";
import { ago, clock, dateTime, errorText, h, keepingFocus, message, percent, timeOfDay } from "./ui.js";

const REFRESH_MS = 5000;
const PAGE_SIZE = 50;
const DAY_MS = 86400000;

export function mount(main) {
  const status = h("div", { class: "status-line" });
  const cards = h("ul", { class: "streams", "aria-label": "Streams" });
  const live = h("input", { type: "checkbox", id: "live", checked: true });
  const updated = h("span", { class: "hint" });
  const logSection = h("section", { class: "log", hidden: true, "aria-labelledby": "log-heading" });
  let streams = [];
  let selected = null;
  let timer = null;
  let refreshLog = null;

  async function refresh() {
    try {
      streams = await api.listStreams();
      keepingFocus(renderCards);
      if (refreshLog) refreshLog();
      updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
      status.replaceChildren();
    } catch (error) {
      message(status, `Could not load the streams: ${errorText(error)}`);
    }
  }

  function schedule() {
    clearInterval(timer);
    timer = live.checked ? setInterval(refresh, REFRESH_MS) : null;
  }

  function renderCards() {
    if (!streams.length) {
      cards.replaceChildren(h("li", { class: "empty" }, "No stream has sent a segment yet."));
      return;
    }
    cards.replaceChildren(...streams.map((s) => {
      const play = s.current_play;
      return h("li", { class: "stream-card", "aria-current": s.name === selected ? "true" : null },
        h("h2", {}, h("button", { class: "link", "data-focus-key": `stream:${s.name}`, onclick: () => openLog(s.name) }, s.name)),
        // `status` (up/down) is shown when the service reports it.
        s.status ? h("p", { class: `badge ${s.status}` }, s.status) : null,
        h("p", { class: "now" }, play
          ? [h("span", { class: "on-air" }, "On air: "), h("strong", {}, play.song.title || `song ${play.song.id}`),
            play.song.artist ? ` — ${play.song.artist}` : "",
            h("span", { class: "hint" }, ` since ${timeOfDay(play.start_at)} (${percent(play.confidence, 2)})`)]
          : "No catalogue song on air"),
        h("p", { class: "hint" },
          `Last segment #${s.last_segment.sequence}, ${ago(s.last_segment.processed_at)}`,
          h("br"), h("span", { class: "key" }, s.last_segment.key)));
    }));
  }

  function openLog(name) {
    selected = name;
    renderCards();
    logSection.hidden = false;
    const log = airplayLog(name);
    refreshLog = log.refresh;
    logSection.replaceChildren(...log.nodes);
    logSection.querySelector("h2").focus();
  }

  live.addEventListener("change", schedule);
  main.append(
    h("h1", {}, "Streams"),
    h("p", { class: "inline-form" }, live, h("label", { for: "live" }, "Live view (refresh every 5 s)"), updated),
    status,
    cards,
    logSection,
  );
  refresh();
  schedule();
  return () => clearInterval(timer);
}

// The inputs hold local time; the API takes ISO 8601 instants.
function isoOf(localValue) {
  return localValue ? new Date(localValue).toISOString() : undefined;
}

function localInputValue(date) {
  const shifted = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return shifted.toISOString().slice(0, 16);
}

function airplayLog(name) {
  const feedback = h("div");
  const from = h("input", { type: "datetime-local", id: "log-from" });
  const to = h("input", { type: "datetime-local", id: "log-to" });
  const body = h("tbody");
  const pager = h("p", { class: "pager" });
  // The range shown: the inputs' values when Show (or Export) was last pressed.
  const state = { offset: 0, range: {} };
  const apply = () => {
    state.range = { from: isoOf(from.value), to: isoOf(to.value) };
    state.offset = 0;
  };

  async function load() {
    try {
      const page = await api.listPlays(name, { ...state.range, limit: PAGE_SIZE, offset: state.offset });
      const last = page.offset + page.items.length;
      keepingFocus(() => {
        body.replaceChildren(...page.items.map(playRow));
        if (!page.items.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No plays in this range.")));
        pager.replaceChildren(
          h("button", { class: "secondary", "data-focus-key": "plays:previous", disabled: page.offset === 0, onclick: () => { state.offset -= PAGE_SIZE; load(); } }, "Previous"),
          h("span", { "aria-live": "polite" }, ` ${page.total ? page.offset + 1 : 0}–${last} of ${page.total} plays `),
          h("button", { class: "secondary", "data-focus-key": "plays:next", disabled: last >= page.total, onclick: () => { state.offset += PAGE_SIZE; load(); } }, "Next"),
        );
      });
      if (feedback.querySelector(".error")) feedback.replaceChildren();
    } catch (error) {
      message(feedback, `Could not load the log: ${errorText(error)}`);
    }
  }

  async function exportCsv() {
    apply();
    load();
    try {
      const text = await api.playsCsv(name, state.range);
      const link = h("a", { href: URL.createObjectURL(new Blob([text], { type: "text/csv" })), download: `${name}-plays.csv` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
      message(feedback, `Exported ${text.trim().split("\n").length - 1} plays.`, "ok");
    } catch (error) {
      message(feedback, `Could not export: ${errorText(error)}`);
    }
  }

  const day = dayTimeline(name);
  load();
  const nodes = [
    h("h2", { id: "log-heading", tabindex: -1 }, `Airplay log: ${name}`),
    h("form", { class: "inline-form", onsubmit: (e) => { e.preventDefault(); apply(); load(); } },
      h("label", { for: "log-from" }, "From"), from,
      h("label", { for: "log-to" }, "To"), to,
      h("button", { type: "submit" }, "Show"),
      h("button", { type: "button", class: "secondary", onclick: exportCsv }, "Export CSV")),
    feedback,
    h("div", { class: "table-wrap" },
      h("table", { class: "plays" },
        h("caption", { class: "visually-hidden" }, `Plays on ${name}`),
        h("thead", {}, h("tr", {}, ...["Start", "End", "Song", "In the song", "Duration", "Confidence", "Status"].map((t) => h("th", { scope: "col" }, t)))),
        body)),
    pager,
    day.node,
  ];
  // The live view reloads what is shown (same range and page) with the stream list.
  return { nodes, refresh: () => { load(); day.load(); } };
}

function playRow(p) {
  return h("tr", { class: p.status },
    h("td", { "data-label": "Start" }, dateTime(p.start_at)),
    h("td", { "data-label": "End" }, timeOfDay(p.end_at)),
    h("td", { "data-label": "Song" }, p.song.title || `song ${p.song.id} (deleted)`, p.song.artist ? ` — ${p.song.artist}` : ""),
    h("td", { "data-label": "In the song" }, `${clock(p.song_start_s)} – ${clock(p.song_end_s)}`),
    h("td", { "data-label": "Duration", class: "num" }, clock(p.duration_s)),
    h("td", { "data-label": "Confidence", class: "num" }, percent(p.confidence, 2)),
    h("td", { "data-label": "Status" }, p.status));
}

// One local day of one stream: plays as bars over 24 hours; the time between them (no catalogue
// song on air, or no audio received) stays visibly empty, and outages the service reports
// (`gaps`) are hatched.
function dayTimeline(name) {
  const dayInput = h("input", { type: "date", id: "day", value: localInputValue(new Date()).slice(0, 10) });
  const track = h("div", { class: "day-track", role: "list", "aria-label": "Plays of the day" });
  const feedback = h("div");
  const hours = h("div", { class: "day-hours", "aria-hidden": "true" });
  const chart = h("div", { class: "day-chart" }, track, hours);
  const scroller = h("div", { class: "day-scroll" }, chart);
  // Zoom: the chart gets wider than the screen and scrolls sideways.
  const zoom = h("select", { id: "day-zoom" },
    [[1, "whole day"], [4, "6 hours"], [24, "1 hour"]].map(([factor, label]) => h("option", { value: factor }, label)));
  let latest = null;

  function scale() {
    const factor = Number(zoom.value);
    const stepMinutes = factor === 1 ? 360 : factor === 4 ? 60 : 10;
    chart.style.width = `${factor * 100}%`;
    const ticks = [];
    for (let minute = 0; minute <= 1440; minute += stepMinutes) {
      const label = `${Math.floor(minute / 60)}:${String(minute % 60).padStart(2, "0")}`;
      ticks.push(h("span", { style: `left:${(100 * minute) / 1440}%` }, label));
    }
    hours.replaceChildren(...ticks);
    // Bring the latest play (or the start of the day) into view.
    scroller.scrollLeft = latest === null ? 0 : latest * chart.scrollWidth - scroller.clientWidth / 2;
  }

  async function load() {
    const start = new Date(`${dayInput.value}T00:00`);
    const end = new Date(start.getTime() + DAY_MS);
    const place = (iso) => Math.min(1, Math.max(0, (new Date(iso) - start) / DAY_MS));
    try {
      const plays = [];
      for (let offset = 0; ; offset += 1000) {
        const page = await api.listPlays(name, { from: start.toISOString(), to: end.toISOString(), limit: 1000, offset });
        plays.push(...page.items);
        if (offset + 1000 >= page.total) break;
      }
      const stream = (await api.listStreams()).find((s) => s.name === name);
      const bars = plays.map((p) => {
        const left = place(p.start_at);
        const width = place(p.end_at) - left;  // a short play still gets a few pixels (CSS)
        return h("span", {
          class: `play-bar ${p.status}`, role: "listitem", style: `left:${left * 100}%;width:${width * 100}%`,
          title: `${timeOfDay(p.start_at)} – ${timeOfDay(p.end_at)} ${p.song.title || ""}`,
        }, h("span", { class: "visually-hidden" }, `${timeOfDay(p.start_at)} to ${timeOfDay(p.end_at)}: ${p.song.title || `song ${p.song.id}`}`));
      });
      const gaps = ((stream && stream.gaps) || []).map((g) => {
        const left = place(g.from);
        const right = g.to ? place(g.to) : place(new Date().toISOString());
        return right > left ? h("span", { class: "gap", role: "listitem", style: `left:${left * 100}%;width:${(right - left) * 100}%`, title: "stream down" },
          h("span", { class: "visually-hidden" }, `stream down from ${timeOfDay(g.from)}`)) : null;
      });
      // No audio at all: before the stream was first seen, and after its latest audio.
      const silent = [];
      if (stream) {
        const first = place(stream.created_at);
        const last = place(stream.last_segment.end_at);
        const now = place(new Date().toISOString());
        if (first > 0) silent.push([0, first, "before the stream's first segment"]);
        if (now > last) silent.push([last, now, `after ${timeOfDay(stream.last_segment.end_at)}`]);
      }
      const nodata = silent.map(([left, right, what]) => h("span", {
        class: "nodata", role: "listitem", style: `left:${left * 100}%;width:${(right - left) * 100}%`, title: `no audio: ${what}`,
      }, h("span", { class: "visually-hidden" }, `no audio ${what}`)));
      track.replaceChildren(...nodata, ...gaps, ...bars);
      latest = plays.length ? place(plays[plays.length - 1].start_at) : null;
      if (Number(zoom.value) > 1 && !scroller.dataset.placed) {
        scroller.dataset.placed = "yes";  // once: later refreshes leave the user's scrolling alone
        scale();
      }
      feedback.replaceChildren(h("p", { class: "hint" },
        plays.length ? `${plays.length} play${plays.length > 1 ? "s" : ""} on ${dayInput.value}. Blank: no catalogue song on air; hatched: no audio received.` : `No plays on ${dayInput.value}.`));
    } catch (error) {
      message(feedback, `Could not load the day: ${errorText(error)}`);
    }
  }

  dayInput.addEventListener("change", () => { delete scroller.dataset.placed; load(); });
  zoom.addEventListener("change", scale);
  scale();
  load();
  const node = h("section", { class: "day", "aria-labelledby": "day-heading" },
    h("h3", { id: "day-heading" }, "Day timeline"),
    h("p", { class: "inline-form" }, h("label", { for: "day" }, "Day"), dayInput,
      h("label", { for: "day-zoom" }, "On screen"), zoom),
    scroller,
    feedback);
  return { node, load };
}
