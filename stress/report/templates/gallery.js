// Filters, sorting and the video timeline of the failure gallery. Plain JavaScript, no library, no
// network; without it the page shows every card in its failure mode.
"use strict";
(function () {
  document.documentElement.classList.replace("no-js", "js");

  function cards() { return Array.prototype.slice.call(document.querySelectorAll("#groups .card")); }

  function applyFilters() {
    var wanted = {};
    document.querySelectorAll("[data-filter]").forEach(function (select) {
      if (select.value !== "") { wanted[select.dataset.filter] = select.value; }
    });
    var active = Object.keys(wanted).length > 0, shown = 0, all = cards();
    all.forEach(function (card) {
      var ok = Object.keys(wanted).every(function (name) { return card.dataset[name] === wanted[name]; });
      card.hidden = !ok;
      if (ok) { shown += 1; }
    });
    document.querySelectorAll("#groups .group").forEach(function (group) {
      var visible = group.querySelectorAll(".card:not([hidden])").length;
      group.hidden = visible === 0;
      var more = group.querySelector("details.more");
      if (more && active) { more.open = true; }
    });
    var out = document.getElementById("shown");
    if (out) { out.textContent = shown + " of " + all.length + " cards shown"; }
  }

  var sorters = {
    rank: function (c) { return Number(c.dataset.rank); },
    severity: function (c) { return Number(c.dataset.severity); },
    onset: function (c) { return Number(c.dataset.onset); },
    value: function (c) { return -Number(c.dataset.value); }
  };

  function applySort() {
    var select = document.getElementById("sort");
    var by = sorters[select ? select.value : "rank"] || sorters.rank;
    var order = function (a, b) { return (by(a) - by(b)) || (Number(a.dataset.rank) - Number(b.dataset.rank)); };
    document.querySelectorAll("#groups details.more > .cards").forEach(function (box) {
      Array.prototype.slice.call(box.children).sort(order).forEach(function (card) { box.appendChild(card); });
    });
    var groups = document.getElementById("groups");
    if (groups) {
      var first = function (g) { return g.querySelector(".card"); };
      Array.prototype.slice.call(groups.children).sort(function (a, b) {
        return select && select.value !== "rank" ? order(first(a), first(b)) : (Number(b.dataset.count) - Number(a.dataset.count)) || order(first(a), first(b));
      }).forEach(function (g) { groups.appendChild(g); });
    }
  }

  function timelines() {
    document.querySelectorAll(".card .timeline").forEach(function (line) {
      var card = line.closest(".card"), video = card.querySelector(".videos video");
      var steps = Number(line.dataset.steps) || 1, fps = Number(line.dataset.rate) || 20;  // steps per second of video (it plays in real time)
      var cursor = line.querySelector(".cursor");
      if (!video) { return; }
      line.addEventListener("click", function (event) {
        var box = line.getBoundingClientRect();
        var step = event.target.dataset.step !== undefined ? Number(event.target.dataset.step)
          : Math.round(steps * (event.clientX - box.left) / box.width);
        video.currentTime = Math.max(0, step) / fps;
        card.querySelectorAll(".videos video").forEach(function (other) { if (other !== video) { other.currentTime = video.currentTime; } });
      });
      video.addEventListener("timeupdate", function () {
        cursor.style.left = Math.min(100, 100 * video.currentTime * fps / steps).toFixed(2) + "%";
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-filter]").forEach(function (s) { s.addEventListener("change", applyFilters); });
    var sort = document.getElementById("sort");
    if (sort) { sort.addEventListener("change", applySort); }
    var form = document.getElementById("filters");
    if (form) { form.addEventListener("submit", function (e) { e.preventDefault(); }); }
    applyFilters();
    timelines();
  });
})();
