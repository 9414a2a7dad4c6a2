// Ferry console plots (Chart.js, vendored): each <canvas data-plot="ID"> reads its data from the JSON
// <script id="ID">. A confidence interval is a floating bar [low, high] with a point at the estimate.
"use strict";

(function () {
  const COLOURS = ["#1f6feb", "#b35900", "#2e7d32", "#8e24aa", "#00838f", "#c62828", "#5d4037", "#455a64"];

  // One row per (metric, model): a single bar dataset and a single point dataset, so each point sits on its bar.
  function intervalChart(canvas, data) {
    const labels = [], bars = [], points = [], fills = [], borders = [];
    data.labels.forEach(function (metric, i) {
      data.datasets.forEach(function (set, index) {
        const colour = COLOURS[index % COLOURS.length];
        labels.push(metric + " · " + set.label);
        bars.push(set.bars[i]);
        points.push(set.estimates[i]);
        fills.push(colour + "55");
        borders.push(colour);
      });
    });
    return {
      type: "bar",
      data: {
        labels: labels,
        datasets: [
          { type: "bar", label: "interval [low, high]", data: bars, backgroundColor: fills, borderColor: borders,
            borderWidth: 1, barPercentage: 0.7, order: 2 },
          { type: "line", label: "measured", data: points, showLine: false, pointRadius: 5,
            backgroundColor: "#111", borderColor: "#111", order: 1 },
        ],
      },
      options: { indexAxis: "y", scales: { x: { beginAtZero: false } } },
    };
  }

  function differenceChart(canvas, data) {
    return {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: [
          { type: "bar", label: (data.label || "difference") + ": interval", data: data.bars,
            backgroundColor: "#1f6feb55", borderColor: "#1f6feb", borderWidth: 1, barPercentage: 0.5, order: 2 },
          { type: "line", label: "measured difference", data: data.estimates, showLine: false, pointRadius: 5,
            backgroundColor: "#111", order: 1 },
        ],
      },
      options: { indexAxis: "y", scales: { x: { beginAtZero: false } } },
    };
  }

  function draw(canvas) {
    const source = document.getElementById(canvas.dataset.plot);
    if (!source || typeof Chart === "undefined") return;
    const data = JSON.parse(source.textContent);
    const config = canvas.dataset.kind === "difference" ? differenceChart(canvas, data) : intervalChart(canvas, data);
    config.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false,
      plugins: { legend: { position: "bottom" } } }, config.options || {});
    // Room for every row: the container grows with the number of bars (CSSOM, allowed by the CSP).
    canvas.parentElement.style.height = Math.max(160, config.data.labels.length * 30 + 90) + "px";
    new Chart(canvas, config);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("canvas[data-plot]").forEach(draw);
  });
})();
