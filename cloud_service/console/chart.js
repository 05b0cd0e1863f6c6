// A horizontal bar chart drawn as SVG by the page itself (no library, no CDN).

const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** bars: [{label, value}] -> an <svg role=img> whose title and each bar's <title> say the numbers. */
export function barChart(title, bars, unit = "pages") {
  const row = 24, left = 160, width = 560, right = 70;
  const max = Math.max(1, ...bars.map((b) => b.value));
  const height = Math.max(1, bars.length) * row + 10;
  const root = svg("svg", { class: "chart", role: "img", viewBox: `0 0 ${left + width + right} ${height}`,
    width: left + width + right, height, "aria-label": `${title}: ${bars.map((b) => `${b.label} ${b.value} ${unit}`).join(", ") || "no data"}` });
  root.append(svg("title", {}, title));
  bars.forEach((b, i) => {
    const y = i * row + 5;
    const w = Math.max(1, Math.round((b.value / max) * width));
    const g = svg("g", { "data-label": b.label, "data-value": b.value });
    g.append(svg("title", {}, `${b.label}: ${b.value} ${unit}`));
    g.append(svg("text", { x: left - 6, y: y + 15, "text-anchor": "end" }, b.label));
    g.append(svg("rect", { x: left, y, width: w, height: row - 6 }));
    g.append(svg("text", { x: left + w + 6, y: y + 15 }, `${b.value}`));
    root.append(g);
  });
  if (!bars.length) root.append(svg("text", { x: 10, y: 20 }, "no data"));
  return root;
}
