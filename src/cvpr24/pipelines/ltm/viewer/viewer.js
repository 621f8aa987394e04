// LTM real-time viewer (spec 2.5, NeRF2Mesh's viewer format) in plain WebGL 2: no external library.
//
// Loads mlp.json (net.0.weight 6 x H, net.1.weight H x 3, both already transposed from torch's layout; bound;
// cascade), then per cascade c mesh_<c>.obj (v, vt, f v/vt, 1-based; its .mtl's map_Kd names the diffuse
// texture, feat0_<c>.jpg by default) and feat1_<c>.jpg, and draws every cascade into one depth buffer:
//   colour = clamp(kd + sigmoid(relu([d, ks] W0) W1), 0, 1)
// with d the unit vector from the camera centre to the fragment (world space), kd / ks the NEAREST texels
// (clamp to edge, no mipmaps), no biases, double-sided, opaque. The same formula as mesh.viewer_shade /
// mesh.render_viewer (the torch reference), with raster.py's conventions:
//  * clip = M [x, y, z, 1] for the row-major 4x4 `mvp` of raster.project (clip = [x, y, z, 1] @ mvp.T); GLSL
//    matrices are column-major, so the row-major array is transposed on upload;
//  * OBJ vt has v up and the JPEG's row 0 is its top row: with UNPACK_FLIP_Y the image's bottom row is texture
//    row t = 0, so texture(tex, vt) picks column floor(u W), row-from-top floor((1 - v) H) like
//    raster.texture_nearest;
//  * the image's row 0 is the top of the canvas (toDataURL), OpenGL's window y is up: NDC y = +1 is row 0.
//
// Modes: interactive orbit (left drag: orbit, right / shift drag: pan, wheel: zoom, keys 1 / 2 / 3: full /
// diffuse / specular, r: reset), or a fixed camera for tests: ?camera=<url of a json> or
// window.renderView(camera), camera = {mvp: 4x4 row-major, eye: [x, y, z], width, height,
// background: [r, g, b] in [0, 1] (optional), mode: "full" | "diffuse" | "specular" (optional)}; the canvas
// is then exactly width x height pixels (devicePixelRatio ignored) and window.viewerReady becomes true once
// drawn. Any failure sets window.viewerError (a string) and shows it on the page.
"use strict";

(function () {
  const MODES = { full: 0, diffuse: 1, specular: 2 };
  const params = new URLSearchParams(window.location.search);
  const base = (() => {
    const b = params.get("base");
    if (!b) return "";
    return b.endsWith("/") ? b : b + "/";
  })();

  window.viewerReady = false;
  window.viewerError = null;

  const canvas = document.getElementById("view");
  const hud = document.getElementById("hud");
  const errorBox = document.getElementById("error");

  const state = {
    gl: null,
    prog: null,
    uni: {},
    cascades: [], // {vao, buffers, count, kd, ks, faces, bbox}
    hidden: 0,
    bound: 0,
    mode: MODES[params.get("mode") || "full"] ?? 0,
    fixed: null, // the camera of test mode, or null for the orbit
    background: [0.125, 0.125, 0.125],
    orbit: null,
    dirty: false,
  };

  function fail(err) {
    const msg = err && err.message ? err.message : String(err);
    window.viewerError = msg;
    window.viewerReady = false;
    errorBox.textContent = "LTM viewer error: " + msg;
    errorBox.style.display = "block";
    hud.textContent = "error";
    console.error("LTM viewer:", msg);
  }

  // ------------------------------------------------------------------------------------------ loading
  async function fetchOk(name) {
    let resp;
    try {
      resp = await fetch(base + name);
    } catch (e) {
      throw new Error(`could not fetch ${name}: ${e.message || e}`);
    }
    if (!resp.ok) throw new Error(`could not load ${name}: HTTP ${resp.status} ${resp.statusText}`.trim());
    return resp;
  }

  function matrix(doc, key, rows, name) {
    const m = doc[key];
    if (!Array.isArray(m) || !m.every((r) => Array.isArray(r))) {
      throw new Error(`${name}: "${key}" must be a list of lists`);
    }
    if (rows !== null && m.length !== rows) throw new Error(`${name}: "${key}" has ${m.length} rows, expected ${rows}`);
    const cols = m.length ? m[0].length : 0;
    if (!m.every((r) => r.length === cols && r.every((x) => typeof x === "number" && isFinite(x)))) {
      throw new Error(`${name}: "${key}" must be a rectangular matrix of finite numbers`);
    }
    return m;
  }

  async function loadMlp() {
    const resp = await fetchOk("mlp.json");
    let doc;
    try {
      doc = await resp.json();
    } catch (e) {
      throw new Error(`mlp.json is not valid JSON: ${e.message || e}`);
    }
    const w0 = matrix(doc, "net.0.weight", 6, "mlp.json"); // 6 x H
    const hidden = w0[0].length;
    if (hidden < 1) throw new Error("mlp.json: net.0.weight has no hidden units");
    const w1 = matrix(doc, "net.1.weight", hidden, "mlp.json"); // H x 3
    if (w1[0].length !== 3) throw new Error(`mlp.json: net.1.weight must be H x 3 (H = ${hidden}), got ${hidden} x ${w1[0].length}`);
    const n = Number(doc.cascade);
    if (!Number.isInteger(n) || n < 1) throw new Error(`mlp.json: "cascade" must be a positive integer, got ${doc.cascade}`);
    return { w0, w1, hidden, cascade: n, bound: Number(doc.bound) || 0 };
  }

  // De-indexed triangles: one (position, vt) pair per corner, polygons fanned, 1-based or negative indices.
  function parseObj(text, name) {
    const v = [];
    const vt = [];
    const pos = [];
    const uv = [];
    let mtllib = null;
    let missingVt = false;
    const lines = text.split(/\r?\n/);
    for (let ln = 0; ln < lines.length; ln++) {
      const line = lines[ln].trim();
      if (line.startsWith("v ")) {
        const p = line.split(/\s+/);
        v.push(+p[1], +p[2], +p[3]);
      } else if (line.startsWith("vt ")) {
        const p = line.split(/\s+/);
        vt.push(+p[1], +p[2]);
      } else if (line.startsWith("f ")) {
        const corners = line.split(/\s+/).slice(1).map((tok) => {
          const parts = tok.split("/");
          let iv = parseInt(parts[0], 10);
          let it = parts.length > 1 && parts[1] !== "" ? parseInt(parts[1], 10) : NaN;
          iv = iv < 0 ? v.length / 3 + iv : iv - 1;
          if (Number.isNaN(it)) missingVt = true;
          else it = it < 0 ? vt.length / 2 + it : it - 1;
          if (!(iv >= 0 && iv < v.length / 3) || (!Number.isNaN(it) && !(it >= 0 && it < vt.length / 2))) {
            throw new Error(`${name}:${ln + 1}: face index out of range in "${line}"`);
          }
          return [iv, it];
        });
        if (corners.length < 3) throw new Error(`${name}:${ln + 1}: a face needs 3 corners: "${line}"`);
        for (let k = 1; k + 1 < corners.length; k++) {
          for (const [iv, it] of [corners[0], corners[k], corners[k + 1]]) {
            pos.push(v[3 * iv], v[3 * iv + 1], v[3 * iv + 2]);
            if (Number.isNaN(it)) uv.push(0, 0);
            else uv.push(vt[2 * it], vt[2 * it + 1]);
          }
        }
      } else if (line.startsWith("mtllib ")) {
        mtllib = line.slice(7).trim();
      }
    }
    if (missingVt) console.warn(`${name}: faces without vt are textured at (0, 0)`);
    const positions = new Float32Array(pos);
    const bbox = [Infinity, Infinity, Infinity, -Infinity, -Infinity, -Infinity];
    for (let i = 0; i < positions.length; i += 3) {
      for (let a = 0; a < 3; a++) {
        bbox[a] = Math.min(bbox[a], positions[i + a]);
        bbox[3 + a] = Math.max(bbox[3 + a], positions[i + a]);
      }
    }
    return { positions, uvs: new Float32Array(uv), count: positions.length / 3, bbox, mtllib };
  }

  async function mapKd(mtllib, fallback) {
    if (!mtllib) return fallback;
    let text;
    try {
      text = await (await fetchOk(mtllib)).text();
    } catch (e) {
      console.warn(`${e.message}; using ${fallback}`);
      return fallback;
    }
    for (const line of text.split(/\r?\n/)) {
      const t = line.trim();
      if (t.startsWith("map_Kd")) return t.slice(6).trim() || fallback;
    }
    return fallback;
  }

  async function loadImage(name) {
    const blob = await (await fetchOk(name)).blob();
    const url = URL.createObjectURL(blob);
    try {
      const img = new Image();
      img.src = url;
      try {
        await img.decode();
      } catch (e) {
        throw new Error(`could not decode ${name} as an image`);
      }
      return img;
    } finally {
      URL.revokeObjectURL(url);
    }
  }

  // ------------------------------------------------------------------------------------------ WebGL
  const VERT = `#version 300 es
layout(location = 0) in vec3 a_pos;
layout(location = 1) in vec2 a_uv;
uniform mat4 u_mvp;
out vec3 v_world;
out vec2 v_uv;
void main() {
  v_world = a_pos;
  v_uv = a_uv;
  gl_Position = u_mvp * vec4(a_pos, 1.0);
}`;

  // HG = H / 4 groups of 4 hidden units; u_w0[i * HG + j] = W0[i][4j .. 4j+3] (input i, 6 inputs),
  // u_w1[c * HG + j] = W1[4j .. 4j+3][c] (output c)
  function fragSource(groups) {
    return `#version 300 es
precision highp float;
precision highp int;
#define HG ${groups}
uniform sampler2D u_kd;
uniform sampler2D u_ks;
uniform vec3 u_eye;
uniform vec4 u_w0[6 * HG];
uniform vec4 u_w1[3 * HG];
uniform int u_mode;
in vec3 v_world;
in vec2 v_uv;
out vec4 o_color;
void main() {
  vec3 kd = texture(u_kd, v_uv).rgb;
  vec3 ks = texture(u_ks, v_uv).rgb;
  vec3 d = normalize(v_world - u_eye);
  float x[6] = float[6](d.x, d.y, d.z, ks.r, ks.g, ks.b);
  vec3 s = vec3(0.0);
  for (int j = 0; j < HG; j++) {
    vec4 h = vec4(0.0);
    for (int i = 0; i < 6; i++) h += x[i] * u_w0[i * HG + j];
    h = max(h, vec4(0.0));
    s += vec3(dot(h, u_w1[j]), dot(h, u_w1[HG + j]), dot(h, u_w1[2 * HG + j]));
  }
  vec3 spec = 1.0 / (1.0 + exp(-s));
  vec3 c = u_mode == 1 ? kd : (u_mode == 2 ? spec : clamp(kd + spec, 0.0, 1.0));
  o_color = vec4(c, 1.0);
}`;
  }

  function compile(gl, type, src, what) {
    const sh = gl.createShader(type);
    gl.shaderSource(sh, src);
    gl.compileShader(sh);
    if (!gl.getShaderParameter(sh, gl.COMPILE_STATUS)) {
      throw new Error(`${what} shader does not compile: ${gl.getShaderInfoLog(sh)}`);
    }
    return sh;
  }

  function buildProgram(gl, hidden) {
    const groups = Math.ceil(hidden / 4);
    const need = 9 * groups + 8;
    const have = gl.getParameter(gl.MAX_FRAGMENT_UNIFORM_VECTORS);
    if (need > have) {
      throw new Error(`the MLP's hidden layer (H = ${hidden}) needs ${need} fragment uniform vectors, this GPU has ${have}`);
    }
    const prog = gl.createProgram();
    gl.attachShader(prog, compile(gl, gl.VERTEX_SHADER, VERT, "vertex"));
    gl.attachShader(prog, compile(gl, gl.FRAGMENT_SHADER, fragSource(groups), "fragment"));
    gl.linkProgram(prog);
    if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) {
      throw new Error(`shader program does not link: ${gl.getProgramInfoLog(prog)}`);
    }
    const uni = {};
    for (const name of ["u_mvp", "u_kd", "u_ks", "u_eye", "u_w0", "u_w1", "u_mode"]) {
      uni[name] = gl.getUniformLocation(prog, name);
    }
    return { prog, uni, groups };
  }

  function uploadMlp(gl, uni, mlp, groups) {
    // hidden units past H (padding to a multiple of 4) get zero weights: relu(0) * 0 adds nothing
    const w0 = new Float32Array(6 * groups * 4);
    for (let i = 0; i < 6; i++) {
      for (let k = 0; k < mlp.hidden; k++) w0[i * groups * 4 + k] = mlp.w0[i][k];
    }
    const w1 = new Float32Array(3 * groups * 4);
    for (let c = 0; c < 3; c++) {
      for (let k = 0; k < mlp.hidden; k++) w1[c * groups * 4 + k] = mlp.w1[k][c];
    }
    gl.uniform4fv(uni.u_w0, w0);
    gl.uniform4fv(uni.u_w1, w1);
  }

  function makeTexture(gl, img) {
    const tex = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, tex);
    gl.pixelStorei(gl.UNPACK_FLIP_Y_WEBGL, true); // image row 0 (top) -> t = 1: OBJ vt has v up
    gl.pixelStorei(gl.UNPACK_PREMULTIPLY_ALPHA_WEBGL, false);
    gl.pixelStorei(gl.UNPACK_COLORSPACE_CONVERSION_WEBGL, gl.NONE); // the JPEG's bytes, no colour management
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA8, gl.RGBA, gl.UNSIGNED_BYTE, img);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_BASE_LEVEL, 0);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAX_LEVEL, 0);
    return tex;
  }

  function makeMesh(gl, mesh) {
    const vao = gl.createVertexArray();
    gl.bindVertexArray(vao);
    const pb = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, pb);
    gl.bufferData(gl.ARRAY_BUFFER, mesh.positions, gl.STATIC_DRAW);
    gl.enableVertexAttribArray(0);
    gl.vertexAttribPointer(0, 3, gl.FLOAT, false, 0, 0);
    const ub = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, ub);
    gl.bufferData(gl.ARRAY_BUFFER, mesh.uvs, gl.STATIC_DRAW);
    gl.enableVertexAttribArray(1);
    gl.vertexAttribPointer(1, 2, gl.FLOAT, false, 0, 0);
    gl.bindVertexArray(null);
    return vao;
  }

  // ------------------------------------------------------------------------------------------ matrices
  // row-major 4x4 as flat arrays of 16 (m[4 * row + col]), the layout of raster.py's torch matrices
  function mul(a, b) {
    const o = new Array(16).fill(0);
    for (let r = 0; r < 4; r++) {
      for (let c = 0; c < 4; c++) {
        let s = 0;
        for (let k = 0; k < 4; k++) s += a[4 * r + k] * b[4 * k + c];
        o[4 * r + c] = s;
      }
    }
    return o;
  }

  function transpose(m) {
    const o = new Float32Array(16);
    for (let r = 0; r < 4; r++) for (let c = 0; c < 4; c++) o[4 * c + r] = m[4 * r + c];
    return o;
  }

  function perspective(fovyDeg, aspect, near, far) { // raster.perspective
    const f = 1 / Math.tan((fovyDeg * Math.PI) / 360);
    return [f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) / (near - far), (2 * far * near) / (near - far), 0, 0, -1, 0];
  }

  const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
  const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
  const dot3 = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  const unit = (a) => { const n = Math.hypot(a[0], a[1], a[2]) || 1; return [a[0] / n, a[1] / n, a[2] / n]; };

  function lookAt(eye, target, up) { // raster.look_at: world -> camera, the camera looks down -z
    const z = unit(sub(eye, target));
    const x = unit(cross(up, z));
    const y = cross(z, x);
    return [x[0], x[1], x[2], -dot3(x, eye), y[0], y[1], y[2], -dot3(y, eye), z[0], z[1], z[2], -dot3(z, eye), 0, 0, 0, 1];
  }

  // ------------------------------------------------------------------------------------------ drawing
  function draw(mvpRowMajor, eye, width, height, background) {
    const gl = state.gl;
    gl.viewport(0, 0, width, height);
    gl.disable(gl.BLEND);
    gl.disable(gl.CULL_FACE); // double-sided
    gl.disable(gl.DITHER);
    gl.enable(gl.DEPTH_TEST);
    gl.depthFunc(gl.LESS); // exact depth ties: the first drawn (lower cascade, lower face) wins, as in raster.py
    gl.depthMask(true);
    gl.clearColor(background[0], background[1], background[2], 1);
    gl.clearDepth(1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    gl.useProgram(state.prog);
    gl.uniformMatrix4fv(state.uni.u_mvp, false, transpose(mvpRowMajor)); // GLSL is column-major
    gl.uniform3f(state.uni.u_eye, eye[0], eye[1], eye[2]);
    gl.uniform1i(state.uni.u_mode, state.mode);
    gl.uniform1i(state.uni.u_kd, 0);
    gl.uniform1i(state.uni.u_ks, 1);
    for (const cas of state.cascades) {
      gl.activeTexture(gl.TEXTURE0);
      gl.bindTexture(gl.TEXTURE_2D, cas.kd);
      gl.activeTexture(gl.TEXTURE1);
      gl.bindTexture(gl.TEXTURE_2D, cas.ks);
      gl.bindVertexArray(cas.vao);
      gl.drawArrays(gl.TRIANGLES, 0, cas.count);
    }
    gl.bindVertexArray(null);
  }

  function checkCamera(cam) {
    if (!cam || typeof cam !== "object") throw new Error("camera: expected an object");
    const m = cam.mvp;
    let flat;
    if (Array.isArray(m) && m.length === 4 && m.every((r) => Array.isArray(r) && r.length === 4)) flat = m.flat();
    else if (Array.isArray(m) && m.length === 16) flat = m.slice();
    else throw new Error("camera: mvp must be a 4x4 row-major matrix (list of 4 rows)");
    if (!flat.every((x) => typeof x === "number" && isFinite(x))) throw new Error("camera: mvp has non-numbers");
    const eye = cam.eye;
    if (!Array.isArray(eye) || eye.length !== 3 || !eye.every((x) => typeof x === "number" && isFinite(x))) {
      throw new Error("camera: eye must be [x, y, z]");
    }
    const width = cam.width;
    const height = cam.height;
    if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
      throw new Error("camera: width and height must be positive integers");
    }
    const bg = cam.background == null ? state.background : cam.background;
    if (!Array.isArray(bg) || bg.length !== 3) throw new Error("camera: background must be [r, g, b] in [0, 1]");
    const mode = cam.mode == null ? null : MODES[cam.mode];
    if (mode === undefined) throw new Error(`camera: mode must be full|diffuse|specular, got ${cam.mode}`);
    return { mvp: flat, eye, width, height, background: bg, mode };
  }

  let loaded = null; // a promise: the asset is on the GPU

  // Test mode: render exactly this camera into a width x height canvas; resolves once drawn.
  window.renderView = async function renderView(camera) {
    window.viewerReady = false;
    try {
      await loaded; // rejects with the loading error, if any
      const cam = checkCamera(camera);
      state.fixed = cam;
      if (cam.mode !== null) state.mode = cam.mode;
      document.body.classList.add("fixed");
      canvas.width = cam.width;
      canvas.height = cam.height;
      canvas.style.width = cam.width + "px";
      canvas.style.height = cam.height + "px";
      draw(cam.mvp, cam.eye, cam.width, cam.height, cam.background);
      state.gl.finish();
      window.viewerError = null; // a previous call's bad camera is forgotten
      errorBox.style.display = "none";
      window.viewerReady = true;
      return { width: cam.width, height: cam.height };
    } catch (e) {
      fail(e);
      throw e;
    }
  };

  // ------------------------------------------------------------------------------------------ orbit
  function initOrbit() {
    const first = state.cascades.find((c) => c.count > 0); // the inner cascade, unless it is empty
    const c0 = first ? first.bbox : [-1, -1, -1, 1, 1, 1];
    const target = [(c0[0] + c0[3]) / 2, (c0[1] + c0[4]) / 2, (c0[2] + c0[5]) / 2];
    const size = Math.max(c0[3] - c0[0], c0[4] - c0[1], c0[5] - c0[2]) || 1;
    let up = [0, 1, 0];
    if (params.get("up")) {
      const u = params.get("up").split(",").map(Number);
      if (u.length === 3 && u.every(isFinite) && Math.hypot(...u) > 0) up = unit(u);
    }
    state.orbit = { target, up, home: target.slice(), dist: 1.6 * size, yaw: 0.6, pitch: 0.35, size, fovy: 50 };
    state.orbit.homeDist = state.orbit.dist;
  }

  function orbitFrame() {
    const o = state.orbit;
    // a basis with `up` as its y axis
    const yAxis = o.up;
    const ref = Math.abs(yAxis[0]) < 0.9 ? [1, 0, 0] : [0, 0, 1];
    const xAxis = unit(cross(yAxis, cross(ref, yAxis)));
    const zAxis = cross(xAxis, yAxis);
    const cp = Math.cos(o.pitch);
    const local = [cp * Math.sin(o.yaw), Math.sin(o.pitch), cp * Math.cos(o.yaw)];
    const dir = [0, 1, 2].map((a) => local[0] * xAxis[a] + local[1] * yAxis[a] + local[2] * zAxis[a]);
    const eye = [0, 1, 2].map((a) => o.target[a] + o.dist * dir[a]);
    return { eye, dir };
  }

  function drawOrbit() {
    state.dirty = false;
    if (state.fixed) return;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    const o = state.orbit;
    const { eye } = orbitFrame();
    const near = Math.max(o.dist * 0.01, 1e-4);
    const far = Math.max(o.dist * 10, 2 * (state.bound || 1), 1000);
    const mvp = mul(perspective(o.fovy, w / h, near, far), lookAt(eye, o.target, o.up));
    draw(mvp, eye, w, h, state.background);
    window.viewerReady = true;
  }

  function requestDraw() {
    if (!state.dirty) {
      state.dirty = true;
      window.requestAnimationFrame(drawOrbit);
    }
  }

  function installControls() {
    let drag = null;
    canvas.addEventListener("contextmenu", (e) => e.preventDefault());
    canvas.addEventListener("pointerdown", (e) => {
      if (state.fixed) return;
      canvas.focus();
      canvas.setPointerCapture(e.pointerId);
      drag = { x: e.clientX, y: e.clientY, pan: e.button === 2 || e.button === 1 || e.shiftKey };
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!drag || state.fixed) return;
      const dx = e.clientX - drag.x;
      const dy = e.clientY - drag.y;
      drag.x = e.clientX;
      drag.y = e.clientY;
      const o = state.orbit;
      if (drag.pan) {
        const { dir } = orbitFrame();
        const right = unit(cross(o.up, dir));
        const upv = cross(dir, right);
        const scale = (2 * o.dist * Math.tan((o.fovy * Math.PI) / 360)) / Math.max(1, canvas.clientHeight);
        for (let a = 0; a < 3; a++) o.target[a] += (-dx * right[a] + dy * upv[a]) * scale;
      } else {
        o.yaw -= dx * 0.008;
        o.pitch = Math.min(1.55, Math.max(-1.55, o.pitch + dy * 0.008));
      }
      requestDraw();
    });
    const end = () => { drag = null; };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    canvas.addEventListener("wheel", (e) => {
      if (state.fixed) return;
      e.preventDefault();
      const o = state.orbit;
      o.dist = Math.min(o.size * 1e4, Math.max(o.size * 1e-3, o.dist * Math.exp(e.deltaY * 0.001)));
      requestDraw();
    }, { passive: false });
    window.addEventListener("keydown", (e) => {
      if (e.key === "1" || e.key === "2" || e.key === "3") {
        state.mode = Number(e.key) - 1;
      } else if ((e.key === "r" || e.key === "R") && state.orbit) {
        Object.assign(state.orbit, { target: state.orbit.home.slice(), dist: state.orbit.homeDist, yaw: 0.6, pitch: 0.35 });
      } else {
        return;
      }
      updateHud();
      if (state.fixed) {
        draw(state.fixed.mvp, state.fixed.eye, state.fixed.width, state.fixed.height, state.fixed.background);
      } else {
        requestDraw();
      }
    });
    window.addEventListener("resize", requestDraw);
  }

  function updateHud() {
    const faces = state.cascades.reduce((s, c) => s + c.count / 3, 0);
    const mode = Object.keys(MODES).find((k) => MODES[k] === state.mode);
    hud.textContent = `LTM viewer: ${state.cascades.length} cascade(s), ${faces} triangles, H = ${state.hidden}, mode ${mode}\n` +
      "drag: orbit   right / shift drag: pan   wheel: zoom   1 / 2 / 3: full / diffuse / specular   r: reset";
  }

  // ------------------------------------------------------------------------------------------ start
  async function load() {
    const gl = canvas.getContext("webgl2", {
      antialias: false,
      preserveDrawingBuffer: true,
      alpha: false,
      depth: true,
      stencil: false,
      premultipliedAlpha: false,
    });
    if (!gl) throw new Error("WebGL 2 is not available in this browser");
    state.gl = gl;
    const mlp = await loadMlp();
    state.hidden = mlp.hidden;
    state.bound = mlp.bound;
    const { prog, uni, groups } = buildProgram(gl, mlp.hidden);
    state.prog = prog;
    state.uni = uni;
    gl.useProgram(prog);
    uploadMlp(gl, uni, mlp, groups);
    const meshes = await Promise.all(Array.from({ length: mlp.cascade }, async (_, c) => {
      const objName = `mesh_${c}.obj`;
      const mesh = parseObj(await (await fetchOk(objName)).text(), objName);
      const kdName = await mapKd(mesh.mtllib, `feat0_${c}.jpg`);
      const [kdImg, ksImg] = await Promise.all([loadImage(kdName), loadImage(`feat1_${c}.jpg`)]);
      return { mesh, kdImg, ksImg };
    }));
    for (const { mesh, kdImg, ksImg } of meshes) { // in cascade order: the draw order
      state.cascades.push({
        vao: makeMesh(gl, mesh),
        count: mesh.count,
        bbox: mesh.bbox,
        kd: makeTexture(gl, kdImg),
        ks: makeTexture(gl, ksImg),
      });
    }
    const err = gl.getError();
    if (err !== gl.NO_ERROR) throw new Error(`WebGL error 0x${err.toString(16)} while uploading the asset`);
    if (gl.isContextLost()) throw new Error("the WebGL context was lost");
  }

  loaded = load();
  loaded.then(async () => {
    updateHud();
    const camUrl = params.get("camera");
    if (camUrl) {
      let cam;
      try {
        const resp = await fetch(camUrl);
        if (!resp.ok) throw new Error(`could not load the camera ${camUrl}: HTTP ${resp.status}`);
        cam = await resp.json();
      } catch (e) {
        fail(e);
        return;
      }
      await window.renderView(cam).catch(() => {});
    } else {
      initOrbit();
      installControls();
      requestDraw();
    }
  }, fail);
  canvas.addEventListener("webglcontextlost", (e) => { e.preventDefault(); fail(new Error("the WebGL context was lost")); });
})();
