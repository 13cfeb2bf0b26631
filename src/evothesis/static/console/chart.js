// A stacked bar chart in SVG, drawn here (no library): one bar per day, one colour per
// client. It is a picture of the table next to it, which carries the same numbers for
// screen readers and keyboard users.

const SVG = "http://www.w3.org/2000/svg";
/** After Okabe–Ito (told apart with the common colour vision deficiencies), darkened
 * where needed so that every bar stands out from the white page by 3:1 or more. */
export const COLOURS = ["#0072B2", "#B35000", "#007A5E", "#AA3377", "#5B4B8A", "#806400", "#000000", "#4D4D4D"];

function node(tag, attributes = {}, text) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

function niceMaximum(value) {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= value) return step * magnitude;
  return 10 * magnitude;
}

/**
 * days: ["2026-05-01", ...]; series: [{name, values: [per day]}]; labelled by `title`
 * and described by `summary`.
 */
export function stackedBars({ days, series, title, summary }) {
  const width = 720;
  const height = 260;
  const left = 56;
  const bottom = 40;
  const top = 12;
  const plotWidth = width - left - 12;
  const plotHeight = height - top - bottom;
  const totals = days.map((_, day) => series.reduce((sum, s) => sum + s.values[day], 0));
  const maximum = niceMaximum(Math.max(0, ...totals));
  const svg = node("svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    class: "chart",
    "aria-labelledby": "chart-title chart-summary",
    preserveAspectRatio: "xMidYMid meet",
  });
  svg.append(node("title", { id: "chart-title" }, title), node("desc", { id: "chart-summary" }, summary));

  for (let tick = 0; tick <= 4; tick += 1) {
    const value = (maximum / 4) * tick;
    const y = top + plotHeight - (value / maximum) * plotHeight;
    svg.append(
      node("line", { x1: left, x2: width - 12, y1: y, y2: y, class: "grid" }),
      node("text", { x: left - 6, y: y + 4, class: "axis", "text-anchor": "end" }, Number.isInteger(value) ? value.toLocaleString("en") : value.toFixed(1)),
    );
  }
  const slot = plotWidth / Math.max(days.length, 1);
  const barWidth = Math.max(2, Math.min(40, slot * 0.7));
  const labelEvery = Math.ceil(days.length / 12);
  days.forEach((day, index) => {
    const x = left + index * slot + (slot - barWidth) / 2;
    let y = top + plotHeight;
    series.forEach((s, position) => {
      const value = s.values[index];
      if (!value) return;
      const barHeight = (value / maximum) * plotHeight;
      y -= barHeight;
      const bar = node("rect", { x, y, width: barWidth, height: barHeight, fill: COLOURS[position % COLOURS.length] });
      bar.append(node("title", {}, `${s.name}, ${day}: ${value.toLocaleString("en")} events`));
      svg.append(bar);
    });
    if (index % labelEvery === 0) {
      svg.append(node("text", { x: x + barWidth / 2, y: height - bottom + 16, class: "axis", "text-anchor": "middle" }, day.slice(5)));
    }
  });
  svg.append(node("line", { x1: left, x2: width - 12, y1: top + plotHeight, y2: top + plotHeight, class: "baseline" }));
  return svg;
}
