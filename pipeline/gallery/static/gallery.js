(function () {
  'use strict';
  var root = document.documentElement;
  var main = document.getElementById('cards');
  var cards = Array.prototype.slice.call(main.querySelectorAll('article.card'));
  // How many images have decoded; read by the browser test, harmless otherwise.
  function tally() {
    var loaded = 0, broken = 0, images = document.images;
    for (var i = 0; i < images.length; i++) {
      if (images[i].complete) { if (images[i].naturalWidth > 0) loaded++; else broken++; }
    }
    root.dataset.imagesTotal = images.length;
    root.dataset.imagesLoaded = loaded;
    root.dataset.imagesBroken = broken;
  }
  Array.prototype.forEach.call(document.images, function (img) {
    img.addEventListener('load', tally);
    img.addEventListener('error', function () { img.classList.add('broken'); tally(); });
  });
  tally();
  window.addEventListener('load', tally);

  // Each card's heat slider sets its layer's opacity (hidden without the script: the stylesheet's stays).
  Array.prototype.forEach.call(document.querySelectorAll('input.heat-opacity'), function (slider) {
    var layer = slider.closest('.heat-box').querySelector('img.heat-layer');
    function set() { layer.style.opacity = String(slider.value / 100); }
    slider.hidden = false;
    slider.previousElementSibling.hidden = false;
    slider.addEventListener('input', set);
    set();
  });

  var controls = document.getElementById('controls');
  var sortBy = document.getElementById('sort-by');
  var show = document.getElementById('show');
  var search = document.getElementById('search');
  var counter = document.getElementById('shown');
  controls.hidden = false;
  function num(card, key) {
    var v = parseFloat(card.dataset[key]);
    return isNaN(v) ? -Infinity : v;
  }
  function byOrder(a, b) { return num(a, 'order') - num(b, 'order'); }
  function title(card) { return card.querySelector('h2').textContent; }
  var orders = {
    recorded: byOrder,
    failures: function (a, b) { return num(a, 'rank') - num(b, 'rank') || byOrder(a, b); },
    relevance: function (a, b) { return num(b, 'relevance') - num(a, 'relevance') || byOrder(a, b); },
    gain: function (a, b) { return num(b, 'gain') - num(a, 'gain') || byOrder(a, b); },
    name: function (a, b) { return title(a).localeCompare(title(b)) || byOrder(a, b); }
  };
  function visible() { return cards.filter(function (c) { return !c.hidden; }); }
  function apply() {
    var sorted = cards.slice().sort(orders[sortBy.value] || orders.recorded);
    var needle = search.value.trim().toLowerCase();
    sorted.forEach(function (card) {
      var status = card.dataset.rank === '2' ? 'ok' : 'problem';
      var title = card.querySelector('h2').textContent.toLowerCase();
      card.hidden = (show.value !== 'all' && show.value !== status) || (needle && title.indexOf(needle) < 0);
      main.appendChild(card);
    });
    cards = sorted;
    var shown = visible();
    shown.forEach(function (card, i) {
      var prev = card.querySelector('a.prev'), next = card.querySelector('a.next');
      prev.hidden = i === 0; next.hidden = i === shown.length - 1;
      if (i > 0) prev.setAttribute('href', '#' + shown[i - 1].id);
      if (i < shown.length - 1) next.setAttribute('href', '#' + shown[i + 1].id);
      card.querySelector('.num').textContent = String(i + 1);
    });
    counter.textContent = shown.length + ' of ' + cards.length;
  }
  [sortBy, show].forEach(function (el) { el.addEventListener('change', apply); });
  search.addEventListener('input', apply);

  var current = null;
  function flip(step) {
    var shown = visible();
    if (!shown.length) return;
    var i = current ? shown.indexOf(current) : -1;
    if (i < 0) {
      // Start from the card at the top of the viewport.
      i = 0;
      for (var j = 0; j < shown.length; j++) {
        if (shown[j].getBoundingClientRect().bottom > 60) { i = j; break; }
      }
      if (step > 0 && shown[i].getBoundingClientRect().top > 80) step = 0;
    }
    var k = Math.max(0, Math.min(shown.length - 1, i + step));
    current = shown[k];
    current.scrollIntoView({block: 'start'});
    current.focus({preventScroll: true});
    if (history.replaceState) history.replaceState(null, '', '#' + current.id);
  }
  document.addEventListener('keydown', function (ev) {
    if (ev.altKey || ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
    var tag = ev.target && ev.target.tagName;
    if (tag === 'INPUT' && ev.target.type !== 'checkbox' || tag === 'SELECT' || tag === 'TEXTAREA') return;
    if (ev.key === 'ArrowRight') { flip(1); ev.preventDefault(); }
    else if (ev.key === 'ArrowLeft') { flip(-1); ev.preventDefault(); }
  });
  main.addEventListener('click', function (ev) {
    var card = ev.target.closest && ev.target.closest('article.card');
    if (card) current = card;
  });
  apply();
})();
