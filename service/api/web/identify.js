// Identify: a dropped or picked file, or a microphone recording, sent to POST /identify; each
// match, and for a long file the timeline of songs under an audio player.
import * as api from "./api.js";
import { clock, dropZone, errorText, h, message, percent } from "./ui.js";

export function mount(main) {
  const status = h("div", { class: "status-line", "aria-live": "polite" });
  const results = h("section", { class: "results", "aria-label": "Results" });
  let objectUrl = null;
  let recorder = null;
  let mounted = true;

  async function run(file) {
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    objectUrl = URL.createObjectURL(file);
    results.replaceChildren();
    const progress = h("progress", { max: 1, value: 0, "aria-label": "Upload" });
    status.replaceChildren(h("p", {}, `Identifying ${file.name}… `, progress));
    try {
      const answer = await api.identify(file, (share) => { progress.value = share; });
      status.replaceChildren();
      render(file, answer);
    } catch (error) {
      message(status, `Could not identify ${file.name}: ${errorText(error)}`);
    }
  }

  function render(file, answer) {
    const player = h("audio", { controls: true, src: objectUrl, preload: "metadata", "aria-label": `Play ${file.name}` });
    const seek = (seconds) => {
      player.currentTime = seconds;
      player.play().catch(() => {});
    };
    const summary = answer.matches.length
      ? `${answer.matches.length} song${answer.matches.length > 1 ? "s" : ""} found`
      : "No song of the catalogue plays in this file";
    results.append(
      h("h2", {}, summary),
      h("p", { class: "hint" }, `${file.name} · ${clock(answer.duration_s)} long · answered in ${Math.round(answer.elapsed_ms)} ms`),
      player,
    );
    if (answer.timeline && answer.timeline.length) {
      results.append(timeline(answer, player, seek));
    }
    if (answer.matches.length) {
      results.append(h("ol", { class: "matches" }, answer.matches.map((m) => match(m, seek))));
    }
  }

  function match(m, seek) {
    const song = m.song;
    return h("li", { class: "match" },
      h("h3", {}, song.title, song.artist ? h("span", { class: "artist" }, ` — ${song.artist}`) : null),
      h("dl", { class: "facts" },
        h("dt", {}, "In the song"), h("dd", {}, songSpan(m)),
        h("dt", {}, "Matched span"), h("dd", {},
          h("button", { class: "link", onclick: () => seek(m.query_start_s), "aria-label": `Play from ${clock(m.query_start_s)}` },
            `${clock(m.query_start_s)} – ${clock(m.query_end_s)}`), " of the file"),
        h("dt", {}, "Speed"), h("dd", {}, speedText(m.speed)),
        h("dt", {}, "Confidence"), h("dd", {}, percent(m.confidence, 4)),
        h("dt", {}, "Evidence"), h("dd", {}, m.evidence === "landmarks" ? `landmarks (score ${m.score})` : `band envelopes (score ${m.score})`),
        song.isrc ? [h("dt", {}, "ISRC"), h("dd", {}, song.isrc)] : null,
      ));
  }

  // One row per song, its entries as bars over the file's duration, and a cursor that follows
  // the player.
  function timeline(answer, player, seek) {
    const duration = answer.duration_s;
    const cursor = h("div", { class: "cursor", "aria-hidden": "true" });
    const rows = new Map();
    for (const entry of answer.timeline) {
      if (!rows.has(entry.song.id)) rows.set(entry.song.id, { song: entry.song, entries: [] });
      rows.get(entry.song.id).entries.push(entry);
    }
    const lanes = [...rows.values()].map(({ song, entries }) =>
      h("div", { class: "lane" },
        h("span", { class: "lane-label" }, song.title),
        h("div", { class: "track" },
          entries.map((e) => h("button", {
            class: "bar",
            style: `left:${(100 * e.start_s) / duration}%;width:${Math.max(0.5, (100 * (e.end_s - e.start_s)) / duration)}%`,
            title: `${song.title}: ${clock(e.start_s)} – ${clock(e.end_s)}`,
            "aria-label": `${song.title} from ${clock(e.start_s)} to ${clock(e.end_s)}: play from there`,
            onclick: () => seek(e.start_s),
          })))));
    const move = () => { cursor.style.left = `${(100 * player.currentTime) / duration}%`; };
    player.addEventListener("timeupdate", move);
    player.addEventListener("seeked", move);
    const list = h("ol", { class: "entries" }, answer.timeline.map((e) =>
      h("li", {}, h("button", { class: "link", onclick: () => seek(e.start_s) },
        `${clock(e.start_s)} – ${clock(e.end_s)}`), ` ${e.song.title}`,
        e.song.artist ? ` — ${e.song.artist}` : "",
        h("span", { class: "hint" }, ` (song ${clock(e.song_start_s)} – ${clock(e.song_end_s)}, ${percent(e.confidence, 2)}, speed ${speedText(e.speed)})`))));
    return h("section", { class: "timeline", "aria-labelledby": "timeline-heading" },
      h("h2", { id: "timeline-heading" }, "Timeline"),
      h("div", { class: "lanes" }, h("div", { class: "scale" }, h("span", {}, "0:00"), h("span", {}, clock(duration, 0))), lanes,
        h("div", { class: "cursor-layer" }, cursor)),
      list);
  }

  const recordButton = h("button", { type: "button", class: "secondary" }, "Record from microphone");
  const seconds = h("select", { id: "record-seconds" }, [5, 10, 15, 20].map((s) => h("option", { value: s, selected: s === 10 }, `${s} s`)));
  recordButton.addEventListener("click", async () => {
    if (recorder) {
      recorder.stop();
      return;
    }
    if (!navigator.mediaDevices || !window.MediaRecorder) {
      message(status, "This browser cannot record audio here (it needs a secure origin: https or localhost).");
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      message(status, `The microphone is not available: ${error.message}`);
      return;
    }
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.addEventListener("dataavailable", (event) => chunks.push(event.data));
    recorder.addEventListener("stop", () => {
      stream.getTracks().forEach((track) => track.stop());
      clearInterval(ticker);
      recorder = null;
      recordButton.textContent = "Record from microphone";
      if (!mounted) return;
      const type = chunks[0] ? chunks[0].type : "audio/webm";
      const extension = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
      run(new File(chunks, `recording.${extension}`, { type }));
    });
    const limit = Number(seconds.value);
    let left = limit;
    recorder.start();
    recordButton.textContent = `Stop (${left} s left)`;
    const ticker = setInterval(() => {
      left -= 1;
      if (left <= 0 && recorder) recorder.stop();
      else recordButton.textContent = `Stop (${left} s left)`;
    }, 1000);
  });

  const { zone } = dropZone({ label: "Identify a file", multiple: false, accept: "audio/*,video/*", onFiles: (files) => run(files[0]) });
  main.append(
    h("h1", {}, "Identify"),
    zone,
    h("div", { class: "inline-form" },
      recordButton, h("label", { for: "record-seconds" }, "Length"), seconds),
    status,
    results,
  );
  return () => {
    mounted = false;
    if (recorder) recorder.stop();
    if (objectUrl) URL.revokeObjectURL(objectUrl);
  };
}

// The part of the song the matched span covers: the API gives where the song would be at the
// file's first sample, and the file's playback speed relative to the song.
function songSpan(m) {
  const at = (t) => m.song_offset_s + t * m.speed;
  return `${clock(at(m.query_start_s))} – ${clock(at(m.query_end_s))}`;
}

function speedText(speed) {
  if (Math.abs(speed - 1) < 0.0005) return "1.000 (original speed)";
  const change = ((speed - 1) * 100).toFixed(1);
  return `${speed.toFixed(3)} (${speed > 1 ? "+" : ""}${change} %)`;
}
